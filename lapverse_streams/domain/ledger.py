"""Cost ledger per tenant: reservations in flight and spend by period and cost center."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

KEEP_PERIODS = 3


@dataclass(frozen=True)
class Ledger:
    """One tenant's ledger; `applied` holds the last source offset applied per input topic."""

    reserved: dict[str, int] = field(default_factory=dict)
    spend: dict[str, dict[str, int]] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the table."""
        return {"reserved": self.reserved, "spend": self.spend, "applied": self.applied}

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Ledger:
        """Inverse of to_json; None is an empty ledger."""
        if not raw:
            return cls()
        return cls(
            dict(raw["reserved"]),
            {p: dict(c) for p, c in raw["spend"].items()},
            dict(raw["applied"]),
        )

    def already_applied(self, source: str, offset: int) -> bool:
        """True when the record at this offset of `source` is already in the ledger."""
        return offset <= self.applied.get(source, -1)

    def mark(self, source: str, offset: int) -> Ledger:
        """Record that `source` is applied up to `offset`."""
        return replace(
            self, applied={**self.applied, source: max(offset, self.applied.get(source, -1))}
        )

    def reserve(self, task_id: str, micros: int) -> Ledger:
        """Hold the estimate of an accepted task."""
        return replace(self, reserved={**self.reserved, task_id: micros})

    def settle(self, task_id: str, cost_micros: int, period: str, cost_center: str) -> Ledger:
        """Charge actual cost and release the task's reservation, in one step."""
        reserved = {k: v for k, v in self.reserved.items() if k != task_id}
        period_spend = dict(self.spend.get(period, {}))
        period_spend[cost_center] = period_spend.get(cost_center, 0) + cost_micros
        spend = {**self.spend, period: period_spend}
        for old in sorted(spend)[:-KEEP_PERIODS]:
            del spend[old]
        return replace(self, reserved=reserved, spend=spend)

    def spent(self, period: str) -> int:
        """Spend of the tenant in a billing period."""
        return sum(self.spend.get(period, {}).values())

    def reserved_total(self) -> int:
        """Cost of work accepted but not yet finished."""
        return sum(self.reserved.values())

    def forecast(self, period: str, estimate_micros: int) -> int:
        """Spend this period + reservations + this request's estimate."""
        return self.spent(period) + self.reserved_total() + estimate_micros
