"""The executor without a broker: bad decisions are dead-lettered, tenants share slots fairly."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from agents.executor import Executor, Retries
from lapverse_streams.domain.fair_queue import FairQueue
from lapverse_streams.events.codec import Headers, PoisonMessage, encode, envelope
from lapverse_streams.events.deadletter import Consumed
from lapverse_streams.events.models import FinOpsTags, TaskDecision, TaskRequest
from lapverse_streams.handlers.base import Outcome, TaskHandler
from tests.unit.dead_letters import Letters, record


def decision(tenant: str, task_id: str, task_type: str = "NOOP", **extra: Any) -> TaskDecision:
    return TaskDecision(
        task_id=task_id,
        idempotency_key=task_id,
        status="accepted",
        reason="accepted",
        http_status=202,
        detail="",
        cost_estimate_micros=10,
        request=TaskRequest(type=task_type, tenant=tenant, requirements=extra),
        tags=FinOpsTags(
            environment="test", tenant_id=tenant, cost_center="default", owner="qa", version="1"
        ),
        decided_at_ms=1,
    )


def accepted(
    tenant: str, task_id: str, key: str | None = None, subject: str | None = None, **kw: Any
) -> Consumed:
    event = envelope(
        "task.accepted", task_id, subject or tenant, decision(tenant, task_id, **kw), 1, "/g"
    )
    return record(encode(event), key or tenant)


class Noop:
    async def run(self, request: TaskRequest) -> Outcome:
        return Outcome({})


class Failing:
    async def run(self, request: TaskRequest) -> Outcome:
        raise RuntimeError("boom")


class Garbage:
    async def run(self, request: TaskRequest) -> Outcome:
        return Outcome({"not json": object()})


class Gate:
    """Blocks tasks of tenant `slow` until opened; others finish at once."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.started: list[str] = []

    async def run(self, request: TaskRequest) -> Outcome:
        self.started.append(request.tenant)
        if request.tenant == "slow":
            await self.opened.wait()
        return Outcome({})


class Sent:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.finished = asyncio.Event()

    async def progress(self, key: bytes, value: bytes, headers: Headers) -> None:
        pass

    async def result(self, key: bytes, value: bytes, headers: Headers) -> None:
        self.results.append(orjson.loads(value))
        self.finished.set()


def executor(
    handlers: dict[str, TaskHandler], letters: Letters, sent: Sent, slots: int = 8, per: int = 2
) -> Executor:
    return Executor(
        handlers,
        Retries(attempts=1, base_ms=1),
        FairQueue(slots, per),
        sent.progress,
        sent.result,
        letters.policy(),
    )


async def settle(ex: Executor) -> None:
    while ex._running:
        await asyncio.gather(*list(ex._running))


def test_a_decision_whose_key_subject_and_tenant_disagree_is_refused() -> None:
    ex = executor({}, Letters(), Sent())
    assert ex.accepted(accepted("acme", "t1")) is not None
    for bad in (accepted("acme", "t2", key="other"), accepted("acme", "t3", subject="other")):
        with pytest.raises(PoisonMessage, match="key_mismatch"):
            ex.accepted(bad)


def test_replies_and_other_decisions_are_not_work_and_foreign_events_are_refused() -> None:
    ex = executor({}, Letters(), Sent())
    reply = accepted("acme", "t1")
    reply = Consumed(reply.topic, 0, 0, reply.key, reply.value, [("lapverse-reply-only", b"true")])
    assert ex.accepted(reply) is None
    rejected = envelope(
        "task.rejected",
        "t2",
        "acme",
        decision("acme", "t2").model_copy(update={"status": "rejected"}),
        1,
        "/g",
    )
    assert ex.accepted(record(encode(rejected), "acme")) is None
    started = orjson.loads(accepted("acme", "t3").value or b"")
    started["type"] = "io.lapverse.task.started.v1"
    with pytest.raises(PoisonMessage, match="unknown_type"):
        ex.accepted(record(orjson.dumps(started), "acme"))


async def test_bad_records_and_failed_tasks_are_dead_lettered_and_good_ones_still_run() -> None:
    letters, sent = Letters(), Sent()
    ex = executor({"NOOP": Noop(), "FAIL": Failing(), "JUNK": Garbage()}, letters, sent)
    await ex.take(record(b"{not json", "acme"))
    await ex.take(record(b"[" * 300 + b"]" * 300, "acme"))
    await ex.take(accepted("acme", "forged", key="other"))
    await ex.take(accepted("acme", "fails", task_type="FAIL"))
    await ex.take(accepted("acme", "junk", task_type="JUNK"))
    await ex.take(accepted("acme", "ok"))
    await settle(ex)
    by_id = {r["data"]["taskId"]: r["data"] for r in sent.results}
    assert sorted(by_id) == ["fails", "junk", "ok"]
    assert by_id["ok"]["status"] == "completed"
    assert (by_id["fails"]["status"], by_id["fails"]["attempts"]) == ("failed", 2)
    assert by_id["junk"]["status"] == "failed"  # an outcome that is not a result fails the task
    assert letters.reasons() == [
        "not_json",
        "too_deep",
        "key_mismatch",
        "handler_failed",
        "handler_failed",
    ]
    assert ("executor", "handler_failed") in letters.counted


async def test_one_tenants_slow_tasks_leave_slots_for_another_tenant() -> None:
    letters, sent, gate = Letters(), Sent(), Gate()
    ex = executor({"NOOP": gate}, letters, sent, slots=3, per=2)
    for i in range(6):
        await ex.take(accepted("slow", f"s{i}"))
    await ex.take(accepted("fast", "f0"))
    await sent.finished.wait()
    assert [r["data"]["taskId"] for r in sent.results] == ["f0"]
    assert (ex.slots.running_of("slow"), ex.slots.waiting) == (2, 4)
    gate.opened.set()
    await settle(ex)
    assert len(sent.results) == 7
    assert gate.started == ["slow", "slow", "fast", "slow", "slow", "slow", "slow"]


async def test_stop_cancels_running_tasks_and_leaves_waiting_ones_to_the_redrive() -> None:
    letters, sent, gate = Letters(), Sent(), Gate()
    ex = executor({"NOOP": gate}, letters, sent, slots=1, per=1)
    for i in range(3):
        await ex.take(accepted("slow", f"s{i}"))
    await asyncio.sleep(0)
    await ex.stop()
    assert (ex.slots.running, ex.slots.waiting) == (1, 0)
    assert (sent.results, letters.sent) == ([], [])
