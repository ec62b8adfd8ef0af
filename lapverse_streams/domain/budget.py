"""SLO error budget: good and bad task counts in hourly buckets over the SLO window."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from lapverse_streams.domain.journal import Journal

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass
class Burn:
    """One tenant's good/bad counts by hour bucket; `applied` is the last offset applied per
    input topic (task results and joined rounds are counted, each from its own topic).

    `record` mutates in place (the governor loads a Burn once per batch and writes it once).
    """

    buckets: dict[int, tuple[int, int]] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    journal: Journal | None = field(default=None, init=False, compare=False, repr=False)

    def to_bytes(self) -> bytes:
        """The stored value (bucket hours as string keys)."""
        return orjson.dumps(
            {"buckets": {str(h): c for h, c in self.buckets.items()}, "applied": self.applied}
        )

    def already_applied(self, source: str, offset: int) -> bool:
        """True when the record at this offset of `source` is already counted."""
        return offset <= self.applied.get(source, -1)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Burn:
        """Inverse of to_bytes; an earlier value's single offset stands for both topics."""
        obj: dict[str, Any] = orjson.loads(raw)
        buckets = {int(h): (int(c[0]), int(c[1])) for h, c in obj["buckets"].items()}
        applied = obj["applied"]
        if isinstance(applied, int):
            applied = dict.fromkeys(("results", "joins"), applied)
        return cls(buckets, applied)

    def record(
        self, finished_ms: int, good: bool, source: str, offset: int, window_days: int
    ) -> Burn:
        """Count one finished task (the record at `offset` of `source`); drop old buckets."""
        hour = finished_ms // HOUR_MS
        if self.journal:
            self.journal.note(self.buckets, hour)
            self.journal.note(self.applied, source)
        if hour not in self.buckets:
            oldest = hour - window_days * 24
            for old in [h for h in self.buckets if h <= oldest]:
                if self.journal:
                    self.journal.note(self.buckets, old)
                del self.buckets[old]
        g, b = self.buckets.get(hour, (0, 0))
        self.buckets[hour] = (g + 1, b) if good else (g, b + 1)
        self.applied[source] = max(offset, self.applied.get(source, -1))
        return self

    def counts(self, now_ms: int, window_ms: int) -> tuple[int, int]:
        """(good, bad) over the last window_ms."""
        first = (now_ms - window_ms) // HOUR_MS
        good = bad = 0
        for hour, (g, b) in self.buckets.items():
            if hour > first:
                good, bad = good + g, bad + b
        return good, bad


def burn_rate(good: int, bad: int, slo_target: float) -> float:
    """Observed error rate divided by the allowed error rate (1 = on budget)."""
    total = good + bad
    if total == 0:
        return 0.0
    return (bad / total) / (1 - slo_target)


def budget_remaining(good: int, bad: int, slo_target: float) -> float:
    """Fraction of the error budget left over the window (negative when overspent)."""
    total = good + bad
    if total == 0:
        return 1.0
    allowed = (1 - slo_target) * total
    return 1 - bad / allowed


def budget_exhausted(
    burn: Burn, slo_target: float, window_days: int, now_ms: int, min_events: int
) -> bool:
    """True when the window holds enough tasks and no error budget is left."""
    good, bad = burn.counts(now_ms, window_days * DAY_MS)
    if good + bad < min_events:
        return False
    return budget_remaining(good, bad, slo_target) <= 0


def retry_after_s(burn: Burn, window_days: int, now_ms: int) -> int:
    """Seconds until the oldest bad bucket leaves the window (at least 60)."""
    bad_hours = [h for h, (_, b) in burn.buckets.items() if b]
    if not bad_hours:
        return 60
    leaves_ms = (min(bad_hours) + 1) * HOUR_MS + window_days * DAY_MS
    return max(60, (leaves_ms - now_ms) // 1000)
