"""Cost ledger per tenant: spend by period and cost center, and the offsets it has applied.

Reservations (work accepted, not yet finished) are not part of the stored ledger: each is its
tenant's accepted dedup record, and `domain/state.py` keeps their totals in memory. A ledger
is bound to its tenant's reservations when the governor loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from lapverse_streams.domain.journal import Journal
from lapverse_streams.domain.state import TenantReservations

KEEP_PERIODS = 3


@dataclass
class Ledger:
    """One tenant's ledger; `applied` holds the last source offset applied per input topic.

    Methods mutate in place and return self; with a journal, every change is noted first so
    a failed record's changes can be undone.
    """

    spend: dict[str, dict[str, int]] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    reservations: TenantReservations = field(
        default_factory=TenantReservations, compare=False, repr=False
    )
    journal: Journal | None = field(default=None, compare=False, repr=False)

    def to_bytes(self) -> bytes:
        """The stored value: spend and applied offsets (reservations live elsewhere)."""
        return orjson.dumps({"spend": self.spend, "applied": self.applied})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Ledger:
        """Inverse of to_bytes; an earlier value's `reserved` is ignored (derived now)."""
        obj: dict[str, Any] = orjson.loads(raw)
        return cls(obj.get("spend", {}), obj.get("applied", {}))

    @property
    def reserved(self) -> dict[str, int]:
        """Reserved micro-dollars by request id."""
        return self.reservations.items

    def already_applied(self, source: str, offset: int) -> bool:
        """True when the record at this offset of `source` is already in the ledger."""
        return offset <= self.applied.get(source, -1)

    def mark(self, source: str, offset: int) -> Ledger:
        """Record that `source` is applied up to `offset`."""
        if self.journal:
            self.journal.note(self.applied, source)
        self.applied[source] = max(offset, self.applied.get(source, -1))
        return self

    def charge(self, cost_micros: int, period: str, cost_center: str) -> Ledger:
        """Add a finished request's actual cost to its period and cost center.

        Its reservation is released by the dedup store, when the request's record turns final.
        """
        if self.journal:
            self.journal.note(self.spend, period)
        period_spend = dict(self.spend.get(period, {}))  # the old dict stays intact
        period_spend[cost_center] = period_spend.get(cost_center, 0) + cost_micros
        self.spend[period] = period_spend
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
        return self.reservations.total

    def forecast(self, period: str, estimate_micros: int) -> int:
        """Spend this period + reservations + this request's estimate."""
        return self.spent(period) + self.reservations.total + estimate_micros
