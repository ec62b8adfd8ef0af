"""An undo log of the writes one record makes, so a record that fails leaves no write behind."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, MutableMapping
from typing import Any

MISSING: Any = object()


class Journal:
    """Notes the old value of every key written while recording; rollback restores them all."""

    def __init__(self) -> None:
        self._undo: list[tuple[MutableMapping[Any, Any], Any, Any]] = []
        self.recording = False

    def begin(self) -> None:
        """Start recording the writes of one record."""
        self._undo.clear()
        self.recording = True

    def commit(self) -> None:
        """Keep the writes made since begin() and stop recording."""
        self._undo.clear()
        self.recording = False

    def rollback(self) -> None:
        """Undo every write made since begin(), newest first, and stop recording."""
        for mapping, key, old in reversed(self._undo):
            if old is MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old
        self.commit()

    def note(self, mapping: MutableMapping[Any, Any], key: Any) -> None:
        """Remember `mapping[key]` as it is now, before it is written (while recording)."""
        if self.recording:
            self._undo.append((mapping, key, mapping.get(key, MISSING)))


class JournaledMapping(MutableMapping[Any, Any]):
    """A store whose writes are noted in a journal first; reads go straight to the store."""

    def __init__(self, store: MutableMapping[Any, Any], journal: Journal) -> None:
        self.store = store
        self._journal = journal

    def __getitem__(self, key: Any) -> Any:
        return self.store[key]

    def get(self, key: Any, default: Any = None) -> Any:
        """The stored value, or `default`."""
        return self.store.get(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._journal.note(self.store, key)
        self.store[key] = value

    def __delitem__(self, key: Any) -> None:
        self._journal.note(self.store, key)
        del self.store[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.store)

    def items(self) -> ItemsView[Any, Any]:
        """The store's own items view (faster than the mixin's)."""
        return self.store.items()

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, key: object) -> bool:
        return key in self.store
