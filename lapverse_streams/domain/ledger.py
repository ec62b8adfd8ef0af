"""Cost ledger per tenant: reservations in flight and spend by period and cost center."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lapverse_streams.domain.journal import Journal

KEEP_PERIODS = 3


@dataclass
class Ledger:
    """One tenant's ledger; `applied` holds the last source offset applied per input topic.

    Methods mutate in place and return self: the governor loads a ledger once per batch,
    applies the batch to it and writes it back once.
    """

    reserved: dict[str, int] = field(default_factory=dict)
    spend: dict[str, dict[str, int]] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    _reserved_total: int = field(default=0, init=False, compare=False, repr=False)
    journal: Journal | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._reserved_total = sum(self.reserved.values())

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the table."""
        return {"reserved": self.reserved, "spend": self.spend, "applied": self.applied}

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Ledger:
        """Inverse of to_json (copying, so the stored value is never mutated); None is empty."""
        if not raw:
            return cls()
        spend = {p: dict(c) for p, c in raw["spend"].items()}
        return cls(dict(raw["reserved"]), spend, dict(raw["applied"]))

    def already_applied(self, source: str, offset: int) -> bool:
        """True when the record at this offset of `source` is already in the ledger."""
        return offset <= self.applied.get(source, -1)

    def mark(self, source: str, offset: int) -> Ledger:
        """Record that `source` is applied up to `offset`."""
        if self.journal:
            self.journal.note(self.applied, source)
        self.applied[source] = max(offset, self.applied.get(source, -1))
        return self

    def reserve(self, task_id: str, micros: int) -> Ledger:
        """Hold the estimate of an accepted task."""
        if self.journal:
            self.journal.note(self.reserved, task_id)
            self.journal.note(vars(self), "_reserved_total")
        self._reserved_total += micros - self.reserved.get(task_id, 0)
        self.reserved[task_id] = micros
        return self

    def settle(self, task_id: str, cost_micros: int, period: str, cost_center: str) -> Ledger:
        """Charge actual cost and release the task's reservation, in one step."""
        if self.journal:
            self.journal.note(self.reserved, task_id)
            self.journal.note(vars(self), "_reserved_total")
            self.journal.note(self.spend, period)
            self.spend[period] = dict(self.spend.get(period, {}))  # the old dict stays intact
        self._reserved_total -= self.reserved.pop(task_id, 0)
        period_spend = self.spend.setdefault(period, {})
        period_spend[cost_center] = period_spend.get(cost_center, 0) + cost_micros
        for old in sorted(self.spend)[:-KEEP_PERIODS]:
            if self.journal:
                self.journal.note(self.spend, old)
            del self.spend[old]
        return self

    def spent(self, period: str) -> int:
        """Spend of the tenant in a billing period."""
        return sum(self.spend.get(period, {}).values())

    def reserved_total(self) -> int:
        """Cost of work accepted but not yet finished."""
        return self._reserved_total

    def forecast(self, period: str, estimate_micros: int) -> int:
        """Spend this period + reservations + this request's estimate."""
        return self.spent(period) + self._reserved_total + estimate_micros
