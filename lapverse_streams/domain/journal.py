"""An undo log of the writes one record makes, so a record that fails leaves no write behind."""

from __future__ import annotations

from collections.abc import MutableMapping
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
