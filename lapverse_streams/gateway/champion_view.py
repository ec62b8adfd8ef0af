"""The gateway's view of champions, rebuilt from lapverse-champions alone, bounded in memory.

Each tenant's family has a current entry (champion, rollout, evidence of its promotion) and a
history of every champion event, ordered by the event's `sequence`. History lives only in the
view's scratch file; current entries are written through to it and the most recent kept in a
bounded cache, as tasks and rounds are (gateway/view.py).
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any

import orjson

from lapverse_streams.events.champion_models import ChampionChanged, ChampionPromoted
from lapverse_streams.gateway.view import Recent, Store

CURRENT = "champions"
HISTORY = "champion_history"
SEQUENCE_DIGITS = 12  # history ids sort by sequence as text
MAX_FAMILIES = 1000  # families one listing shows


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as an RFC 3339 UTC time."""
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _pack(entry: dict[str, Any]) -> bytes:
    return zlib.compress(orjson.dumps(entry), 1)


def _unpack(raw: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = orjson.loads(zlib.decompress(raw))
    return entry


class ChampionView:
    """Current champions and their history per tenant and family."""

    def __init__(self, store: Store, max_entries: int) -> None:
        self._store = store
        self._recent = Recent(store, CURRENT, max_entries)

    def __len__(self) -> int:
        return len(self._recent)

    def current(self, tenant: str, family: str) -> dict[str, Any] | None:
        """The family's current champion entry, None before its first promotion."""
        raw = self._recent.get(f"{tenant}/{family}")
        return _unpack(raw) if raw is not None else None

    def families(self, tenant: str) -> list[dict[str, Any]]:
        """Every family of the tenant with a champion, by family name."""
        rows = self._store.scan(CURRENT, f"{tenant}/", f"{tenant}0", MAX_FAMILIES)  # 0 after /
        return sorted((_unpack(raw) for raw in rows), key=lambda e: str(e["family"]))

    def history(
        self, tenant: str, family: str, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to `limit` events of the family, newest first, with a sequence below `before`."""
        low = f"{tenant}/{family}/"
        high = low + (f"{before:0{SEQUENCE_DIGITS}d}" if before is not None else "~")
        return [_unpack(raw) for raw in self._store.scan(HISTORY, low, high, limit)]

    def apply(self, short: str, event: ChampionPromoted | ChampionChanged) -> None:
        """Record one champion event; a copy of one already read changes nothing."""
        tenant, family = event.tenant, event.family
        kind = short.removeprefix("champion.")
        item: dict[str, Any] = {
            "sequence": event.sequence,
            "type": kind,
            "champion": event.champion,
            "previous": event.previous,
            "baseline": event.baseline or None,
            "state": event.state,
            "rolloutPercent": event.rollout_percent,
        }
        if isinstance(event, ChampionPromoted):
            at_ms = event.promoted_at_ms
            item |= {
                "reason": f"{event.champion} beats {event.baseline or event.previous}",
                "cause": "promotion",
                "actor": "governor",
                "competitionId": event.competition_id,
                "evidence": event.evidence,
            }
        else:
            at_ms = event.changed_at_ms
            item |= {"reason": event.reason, "cause": event.cause, "actor": event.actor}
            if event.command_id:
                item["commandId"] = event.command_id
        item["at"] = iso(at_ms)
        history_id = f"{tenant}/{family}/{event.sequence:0{SEQUENCE_DIGITS}d}"
        self._store.put(HISTORY, history_id, _pack(item))
        old = self.current(tenant, family)
        if old is not None and event.sequence <= old["sequence"]:
            return
        self._save(tenant, family, _current(old, family, item, at_ms, event))

    def _save(self, tenant: str, family: str, entry: dict[str, Any]) -> None:
        key, packed = f"{tenant}/{family}", _pack(entry)
        self._store.put(CURRENT, key, packed)  # written through: listing reads the file
        self._recent.put(key, packed)


def _current(
    old: dict[str, Any] | None,
    family: str,
    item: dict[str, Any],
    at_ms: int,
    event: ChampionPromoted | ChampionChanged,
) -> dict[str, Any]:
    """The family's entry after an event: the promotion's evidence stays until the champion
    changes hands by other means (a rollback or a pin)."""
    same_champion = old is not None and old["champion"] == event.champion
    if isinstance(event, ChampionPromoted):
        promotion = {
            "sequence": event.sequence,
            "competitionId": event.competition_id,
            "at": item["at"],
            "evidence": event.evidence,
        }
        since = item["at"]
    elif same_champion and old is not None:
        promotion, since = old["promotion"], old["since"]
    else:
        promotion, since = None, iso(at_ms)
    return {
        "family": family,
        "champion": event.champion,
        "state": event.state,
        "rolloutPercent": event.rollout_percent,
        "baseline": event.baseline or None,
        "previous": event.previous,
        "sequence": event.sequence,
        "since": since,
        "updatedAt": item["at"],
        "reason": item["reason"],
        "actor": item["actor"],
        "promotion": promotion,
        "flagKey": event.flag_key,
    }
