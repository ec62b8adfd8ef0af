"""The gateway's task view: first decisions, re-emitted ones, and keys decided anew."""

from __future__ import annotations

from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import (
    FinOpsTags,
    TaskDecision,
    TaskRequest,
    TaskResult,
    TaskStarted,
)
from lapverse_streams.gateway.bridge import Bridge
from lapverse_streams.settings import Settings

TAGS = FinOpsTags(environment="t", tenant_id="acme", cost_center="ops", owner="o", version="1")


def decision(at_ms: int) -> bytes:
    request = TaskRequest(type="NOOP", tenant="acme", cost_center="ops")
    data = TaskDecision(
        task_id="t-1",
        idempotency_key="k",
        status="accepted",
        reason="accepted",
        http_status=202,
        detail="accepted",
        cost_estimate_micros=10_000,
        request=request,
        tags=TAGS,
        decided_at_ms=at_ms,
    )
    return encode(envelope("task.accepted", "k", "acme", data, at_ms, "/t"))


def result() -> bytes:
    data = TaskResult(task_id="t-1", status="completed", type="NOOP", cost_center="ops",
                      duration_ms=1, attempts=1, cost_micros=10_000, tags=TAGS,
                      finished_at_ms=2)  # fmt: skip
    return encode(envelope("task.completed", "r", "acme", data, 2, "/t"))


def started() -> bytes:
    data = TaskStarted(task_id="t-1", type="NOOP", cost_center="ops", tags=TAGS, started_at_ms=1)
    return encode(envelope("task.started", "s", "acme", data, 1, "/t"))


def test_status_goes_accepted_running_completed_even_if_started_is_read_first() -> None:
    bridge = Bridge(Settings())
    bridge._on_record(started(), [])
    bridge._on_record(decision(1), [])
    assert bridge.tasks["t-1"].status == "running"
    bridge._on_record(result(), [])
    assert bridge.tasks["t-1"].status == "completed"


def test_a_re_emitted_decision_keeps_the_result_and_a_later_one_starts_over() -> None:
    bridge = Bridge(Settings())
    bridge._on_record(decision(1), [])
    bridge._on_record(result(), [])
    bridge._on_record(decision(1), [])  # the stored decision again, on a redelivery
    assert bridge.tasks["t-1"].status == "completed"
    bridge._on_record(decision(5), [])  # the key expired and was decided anew
    assert bridge.tasks["t-1"].status == "accepted"
    assert bridge.tasks["t-1"].result is None
