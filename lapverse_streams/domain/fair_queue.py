"""Fair shares of a fixed number of slots between tenants: a cap each, round-robin for the rest."""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Decides which queued items start, and when: at most `per_tenant` running per tenant.

    Items of one tenant start in the order they were offered; when a slot frees, tenants with
    waiting items take turns (round-robin), skipping those at their cap. Nothing is dropped:
    an item waits until its tenant is under its cap and a slot is free. Pure bookkeeping: the
    caller starts what `offer` and `finished` return, and calls `finished` once per start.
    """

    def __init__(self, slots: int, per_tenant: int) -> None:
        if slots < 1 or per_tenant < 1:
            raise ValueError("slots and per_tenant must be at least 1")
        self.slots = slots
        self.per_tenant = per_tenant
        self._queues: dict[str, deque[T]] = {}
        self._turns: deque[str] = deque()  # tenants with waiting items, next turn first
        self._running: defaultdict[str, int] = defaultdict(int)
        self._running_total = 0

    @property
    def running(self) -> int:
        """Items started and not yet finished."""
        return self._running_total

    @property
    def waiting(self) -> int:
        """Items offered and not yet started."""
        return sum(len(queue) for queue in self._queues.values())

    def running_of(self, tenant: str) -> int:
        """A tenant's items started and not yet finished."""
        return self._running.get(tenant, 0)

    def offer(self, tenant: str, item: T) -> list[T]:
        """Queue an item; return the items that may start now (possibly this one)."""
        if tenant not in self._queues:
            self._queues[tenant] = deque()
            self._turns.append(tenant)
        self._queues[tenant].append(item)
        return self._fill()

    def finished(self, tenant: str) -> list[T]:
        """Free the slot of one of the tenant's started items; return the items that start now."""
        if self._running.get(tenant, 0) < 1:
            raise ValueError(f"no running item of tenant {tenant!r}")
        self._running[tenant] -= 1
        if not self._running[tenant]:
            del self._running[tenant]
        self._running_total -= 1
        return self._fill()

    def drain(self) -> list[T]:
        """Remove and return every waiting item (when the owner stops)."""
        items = [item for tenant in self._turns for item in self._queues[tenant]]
        self._queues.clear()
        self._turns.clear()
        return items

    def _fill(self) -> list[T]:
        started: list[T] = []
        while self._running_total < self.slots:
            tenant = self._next_turn()
            if tenant is None:
                break
            queue = self._queues[tenant]
            started.append(queue.popleft())
            if not queue:
                del self._queues[tenant]
                self._turns.remove(tenant)
            self._running[tenant] += 1
            self._running_total += 1
        return started

    def _next_turn(self) -> str | None:
        """The next tenant under its cap with a waiting item; it goes to the back of the turns."""
        for _ in range(len(self._turns)):
            tenant = self._turns[0]
            self._turns.rotate(-1)
            if self._running.get(tenant, 0) < self.per_tenant:
                return tenant
        return None
