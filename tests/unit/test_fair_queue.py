"""Fair executor slots: a cap per tenant, nothing dropped, round-robin as slots free up."""

from __future__ import annotations

import pytest

from lapverse_streams.domain.fair_queue import FairQueue


def test_items_start_at_once_while_under_both_caps() -> None:
    queue: FairQueue[str] = FairQueue(slots=4, per_tenant=2)
    assert queue.offer("a", "a1") == ["a1"]
    assert queue.offer("b", "b1") == ["b1"]
    assert (queue.running, queue.waiting) == (2, 0)


def test_a_tenant_at_its_cap_waits_but_others_start() -> None:
    queue: FairQueue[str] = FairQueue(slots=8, per_tenant=2)
    started = [item for i in range(20) for item in queue.offer("a", f"a{i}")]
    assert started == ["a0", "a1"]
    assert (queue.running_of("a"), queue.waiting) == (2, 18)
    assert queue.offer("b", "b0") == ["b0"]  # free slots are not held back by a's backlog


def test_a_finished_item_lets_the_next_of_its_tenant_start_in_order() -> None:
    queue: FairQueue[str] = FairQueue(slots=8, per_tenant=1)
    for i in range(3):
        queue.offer("a", f"a{i}")
    assert queue.finished("a") == ["a1"]
    assert queue.finished("a") == ["a2"]
    assert queue.finished("a") == []
    assert (queue.running, queue.waiting) == (0, 0)


def test_freed_slots_go_round_robin_across_waiting_tenants() -> None:
    queue: FairQueue[str] = FairQueue(slots=2, per_tenant=2)
    assert queue.offer("a", "a0") + queue.offer("a", "a1") == ["a0", "a1"]
    for tenant in ("a", "b", "c"):
        for i in range(2, 4):
            queue.offer(tenant, f"{tenant}{i}")
    order = []
    for finished in ("a", "a", "b", "c", "a", "b", "c", "a"):
        order += queue.finished(finished)
    assert order == ["a2", "b2", "c2", "a3", "b3", "c3"]


def test_a_tenant_at_its_cap_is_skipped_when_a_slot_frees() -> None:
    queue: FairQueue[str] = FairQueue(slots=3, per_tenant=2)
    queue.offer("a", "a0")
    queue.offer("a", "a1")
    queue.offer("b", "b0")
    queue.offer("a", "a2")  # a is at its cap, slots are full
    queue.offer("b", "b1")
    assert queue.finished("b") == ["b1"]  # a's turn comes first, but a is still at its cap
    assert queue.finished("a") == ["a2"]


def test_nothing_is_dropped_and_drain_returns_the_waiting_items() -> None:
    queue: FairQueue[int] = FairQueue(slots=1, per_tenant=1)
    started = [item for i in range(5) for item in queue.offer(f"t{i % 2}", i)]
    assert started == [0]
    assert sorted(queue.drain()) == [1, 2, 3, 4]
    assert queue.waiting == 0
    assert queue.finished("t0") == []


def test_finishing_more_than_was_started_is_an_error() -> None:
    queue: FairQueue[str] = FairQueue(slots=1, per_tenant=1)
    with pytest.raises(ValueError, match="no running item"):
        queue.finished("a")
    with pytest.raises(ValueError, match="at least 1"):
        FairQueue[str](slots=0, per_tenant=1)
