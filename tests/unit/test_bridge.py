"""The gateway's reader: task view in any order, bad records dead-lettered, bounded memory."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from lapverse_streams.config_view import ConfigView
from lapverse_streams.events import topics
from lapverse_streams.events.codec import Headers, encode, envelope
from lapverse_streams.events.deadletter import REASON_HEADER, Consumed
from lapverse_streams.events.models import (
    CompetitionCompleted,
    CompetitionDecision,
    CompetitionRequest,
    DecisionReason,
    FinOpsTags,
    TaskDecision,
    TaskRequest,
    TaskResult,
    TaskStarted,
    TenantConfig,
    WorkerStatus,
)
from lapverse_streams.gateway.bridge import Bridge, TaskState
from lapverse_streams.gateway.status import StatusMonitor, status_report
from lapverse_streams.gateway.view import MAX_ENTRY_BYTES, remove_stale_stores
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.settings import Settings

OFFSETS = itertools.count()


def tags(tenant: str = "acme") -> FinOpsTags:
    return FinOpsTags(environment="t", tenant_id=tenant, cost_center="ops", owner="o", version="1")


def decision(
    at_ms: int, task_id: str = "t-1", tenant: str = "acme", status: str = "accepted", **extra: Any
) -> bytes:
    request = TaskRequest(type="NOOP", tenant=tenant, cost_center="ops", **extra)
    data = TaskDecision(
        task_id=task_id,
        idempotency_key="k",
        status=status,  # type: ignore[arg-type]
        reason=DecisionReason.ACCEPTED if status == "accepted" else DecisionReason.MARGIN_EXCEEDED,
        http_status=202,
        detail=status,
        cost_estimate_micros=10_000,
        request=request,
        tags=tags(tenant),
        decided_at_ms=at_ms,
    )
    return encode(envelope(f"task.{status}", f"{task_id}:d", tenant, data, at_ms, "/t"))


def result(
    task_id: str = "t-1",
    tenant: str = "acme",
    cost_micros: int = 10_000,
    output: dict[str, Any] | None = None,
    duration_ms: int = 1,
) -> bytes:
    data = TaskResult(task_id=task_id, status="completed", type="NOOP", cost_center="ops",
                      duration_ms=duration_ms, attempts=1, cost_micros=cost_micros, result=output,
                      tags=tags(tenant), finished_at_ms=2)  # fmt: skip
    return encode(envelope("task.completed", f"{task_id}:r", tenant, data, 2, "/t"))


def started(task_id: str = "t-1", tenant: str = "acme") -> bytes:
    data = TaskStarted(task_id=task_id, type="NOOP", cost_center="ops", tags=tags(tenant),
                       started_at_ms=1)  # fmt: skip
    return encode(envelope("task.started", f"{task_id}:s", tenant, data, 1, "/t"))


def round_decision(competition_id: str = "c-1", tenant: str = "acme") -> bytes:
    data = CompetitionDecision(competition_id=competition_id, idempotency_key="k",
                               status="accepted", reason=DecisionReason.ACCEPTED, http_status=202,
                               detail="accepted", cost_estimate_micros=80_000,
                               variant_cost_micros=20_000, competitors=["a", "b"], deadline_ms=9,
                               request=CompetitionRequest(tenant=tenant), tags=tags(tenant),
                               decided_at_ms=1)  # fmt: skip
    return encode(envelope("competition.accepted", "c:d", tenant, data, 1, "/t"))


def round_completed(competition_id: str = "c-1", tenant: str = "acme") -> bytes:
    data = CompetitionCompleted(competition_id=competition_id, idempotency_key="k", tenant=tenant,
                                family="forecast", scores={"a": 1.0}, variants={}, champion="a",
                                missing=[], cost_micros=40_000, cost_estimate_micros=80_000,
                                promotion={"decision": "kept"}, tags=tags(tenant),
                                completed_at_ms=5)  # fmt: skip
    return encode(envelope("competition.completed", "c:c", tenant, data, 5, "/t"))


def worker_status(worker_id: str = "w-1", at_ms: int = 1) -> bytes:
    data = WorkerStatus(worker_id=worker_id, breakers={}, consumer_lag={}, table_keys={},
                        assigned_partitions=2, updated_at_ms=at_ms)  # fmt: skip
    return encode(envelope("worker.status", f"{worker_id}:{at_ms}", worker_id, data, 1, "/w"))


class Sink:
    """An in-memory dead-letter topic."""

    def __init__(self) -> None:
        self.letters: list[tuple[bytes | None, bytes | None, Headers]] = []

    async def __call__(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        self.letters.append((key, value, headers))

    def reasons(self) -> list[str]:
        return [dict(headers)[REASON_HEADER].decode() for _, _, headers in self.letters]


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def bridge(tmp_path: Path, sink: Sink, metrics: Metrics) -> AsyncIterator[Bridge]:
    settings = Settings(data_dir=str(tmp_path), gateway_view_max_tasks=10)
    running = Bridge(settings, metrics, dead_letter_sink=sink)
    yield running
    await running.stop()


async def feed(
    bridge: Bridge, topic: str, value: bytes | None, key: bytes | None = b"acme", **headers: str
) -> None:
    record = Consumed(
        bridge.settings.topic(topic),
        0,
        next(OFFSETS),
        key,
        value,
        [(name, v.encode()) for name, v in headers.items()],
    )
    await bridge.on_record(record)


def state_of(bridge: Bridge, task_id: str = "t-1") -> TaskState:
    state = bridge.tasks.get(task_id)
    assert state is not None
    return state


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def dead_letters(metrics: Metrics, reason: str) -> float:
    labels = {"agent": "gateway-reader", "reason": reason}
    return metrics.registry.get_sample_value("lapverse_dlq_total", labels) or 0.0


async def test_status_goes_accepted_running_completed_even_if_started_is_read_first(
    bridge: Bridge,
) -> None:
    await feed(bridge, topics.TASK_PROGRESS, started())
    assert bridge.tasks.get("t-1") is None  # progress alone is no task to show
    await feed(bridge, topics.TASK_DECISIONS, decision(1))
    assert state_of(bridge).status == "running"
    await feed(bridge, topics.TASK_RESULTS, result())
    assert state_of(bridge).status == "completed"


async def test_a_result_read_before_its_decision_is_kept(bridge: Bridge) -> None:
    await feed(bridge, topics.TASK_RESULTS, result(cost_micros=7))
    await feed(bridge, topics.TASK_DECISIONS, decision(1))
    state = state_of(bridge)
    assert state.status == "completed"
    assert (state.result or {})["costMicros"] == 7


async def test_a_re_emitted_decision_keeps_the_result_and_a_later_one_starts_over(
    bridge: Bridge,
) -> None:
    await feed(bridge, topics.TASK_DECISIONS, decision(1))
    await feed(bridge, topics.TASK_RESULTS, result())
    await feed(bridge, topics.TASK_DECISIONS, decision(1))  # the stored decision, redelivered
    assert state_of(bridge).status == "completed"
    await feed(bridge, topics.TASK_DECISIONS, decision(5))  # the key expired, decided anew
    state = state_of(bridge)
    assert state.status == "accepted"
    assert state.result is None


async def test_a_result_is_applied_and_counted_once(bridge: Bridge) -> None:
    await feed(bridge, topics.TASK_DECISIONS, decision(1))
    await feed(bridge, topics.TASK_RESULTS, result(cost_micros=10_000))
    await feed(bridge, topics.TASK_RESULTS, result(cost_micros=99_999))  # a redelivery
    assert (state_of(bridge).result or {})["costMicros"] == 10_000
    assert bridge.figures.per_tenant["acme"]["completed"] == 1
    assert bridge.figures.per_tenant["acme"]["costMicros"] == 10_000


async def test_a_round_completed_before_its_decision_is_read_and_applied_once(
    bridge: Bridge,
) -> None:
    await feed(bridge, topics.COMPETITION_RESULTS, round_completed())
    assert bridge.competitions.get("c-1") is None
    await feed(bridge, topics.TASK_DECISIONS, round_decision())
    await feed(bridge, topics.TASK_DECISIONS, round_decision())
    state = bridge.competitions.get("c-1")
    assert state is not None
    assert (state.completed or {})["champion"] == "a"
    assert state.decision["request"]["family"] == "forecast"


def envelope_bytes(short: str, data: dict[str, Any], subject: str = "acme") -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": "x",
            "source": "/evil",
            "type": f"io.lapverse.{short}.v1",
            "subject": subject,
            "time": "2024-01-01T00:00:00Z",
            "data": data,
        }
    )


def without_task_id() -> bytes:
    data = orjson.loads(decision(1))["data"]
    del data["taskId"]
    return envelope_bytes("task.accepted", data)


def status_with_wrong_types() -> bytes:
    data = orjson.loads(worker_status())["data"]
    data["consumerLag"] = "lots"
    data["assignedPartitions"] = [1]
    return envelope_bytes("worker.status", data, subject="w-1")


BAD_RECORDS = {
    "not json": (topics.TASK_DECISIONS, b"{nope", b"acme", "not_json"),
    "no value": (topics.TASK_RESULTS, None, b"acme", "empty"),
    "wrong schema": (topics.TASK_DECISIONS, b'{"hello": 1}', b"acme", "wrong_schema"),
    "decision without taskId": (topics.TASK_DECISIONS, without_task_id(), b"acme", "wrong_schema"),
    "worker.status with wrong types": (
        topics.WORKER_STATUS,
        status_with_wrong_types(),
        b"w-1",
        "wrong_schema",
    ),
    "decision keyed by another tenant": (
        topics.TASK_DECISIONS,
        decision(1),
        b"globex",
        "key_mismatch",
    ),
    "result of another tenant's task": (
        topics.TASK_RESULTS,
        result(tenant="globex"),
        b"globex",
        "key_mismatch",
    ),
    "worker.status keyed by another worker": (
        topics.WORKER_STATUS,
        worker_status(),
        b"w-2",
        "key_mismatch",
    ),
    "event that does not belong on the topic": (
        topics.TASK_RESULTS,
        started(),
        b"acme",
        "unknown_type",
    ),
    "decision nested too deep": (
        topics.TASK_DECISIONS,
        decision(1, requirements={"deep": orjson.loads(b"[" * 40 + b"]" * 40)}),
        b"acme",
        "too_deep",
    ),
}


@pytest.mark.parametrize("name", list(BAD_RECORDS))
async def test_a_bad_record_is_dead_lettered_counted_and_the_next_good_one_applied(
    bridge: Bridge, sink: Sink, metrics: Metrics, name: str
) -> None:
    topic, value, key, reason = BAD_RECORDS[name]
    await feed(bridge, topics.TASK_DECISIONS, decision(1))  # t-1 of acme is known
    await feed(bridge, topic, value, key=key, traceparent="00-abc")
    assert sink.reasons() == [reason]
    dead_key, dead_value, headers = sink.letters[0]
    assert (dead_key, dead_value) == (key, value)  # the original bytes, keyed as they came
    found = dict(headers)
    assert found["traceparent"] == b"00-abc"
    assert found["lapverse-dlq-agent"] == b"gateway-reader"
    assert found["lapverse-dlq-topic"] == bridge.settings.topic(topic).encode()
    assert dead_letters(metrics, reason) == 1
    await feed(bridge, topics.TASK_RESULTS, result())
    await feed(bridge, topics.WORKER_STATUS, worker_status(), key=b"w-1")
    state = state_of(bridge)
    assert (state.status, state.tenant) == ("completed", "acme")
    assert list(bridge.workers) == ["w-1"]


async def test_a_mismatched_decision_wakes_no_caller_and_leaves_no_task(
    bridge: Bridge, sink: Sink
) -> None:
    await feed(bridge, topics.TASK_DECISIONS, decision(1, task_id="t-9"), key=b"globex")
    assert bridge.tasks.get("t-9") is None
    assert bridge.figures.per_tenant == {}
    assert sink.reasons() == ["key_mismatch"]


async def test_a_tombstone_on_the_worker_status_topic_forgets_the_worker(bridge: Bridge) -> None:
    await feed(bridge, topics.WORKER_STATUS, worker_status(), key=b"w-1")
    await feed(bridge, topics.WORKER_STATUS, None, key=b"w-1")
    assert bridge.workers == {}


async def test_memory_is_bounded_and_evicted_tasks_still_answer_from_disk(
    bridge: Bridge, sink: Sink
) -> None:
    extras = {"notes": "x" * 16_000, "more": ["y" * 16_000] * 3}  # ~60 KB the view never keeps
    for n in range(50):
        tenant = "acme" if n % 2 else "globex"
        task_id = f"t-{n}"
        await feed(bridge, topics.TASK_DECISIONS, decision(1, task_id, tenant, requirements=extras),
                   key=tenant.encode())  # fmt: skip
        if n % 3 == 0:
            await feed(bridge, topics.TASK_RESULTS, result(task_id, tenant, cost_micros=n),
                       key=tenant.encode())  # fmt: skip
    recent = bridge.tasks.recent
    assert len(recent) <= bridge.settings.gateway_view_max_tasks
    assert recent.bytes <= recent.max_bytes
    assert sink.letters == []
    for n in range(50):
        state = bridge.tasks.get(f"t-{n}")
        assert state is not None
        assert state.tenant == ("acme" if n % 2 else "globex")
        assert state.status == ("completed" if n % 3 == 0 else "accepted")
        assert state.decision["costEstimateMicros"] == 10_000
        assert (state.result or {}).get("costMicros") == (n if n % 3 == 0 else None)
        assert "request" not in state.decision  # the request's extras are never kept
    # an old task still moves on when its result comes
    await feed(bridge, topics.TASK_RESULTS, result("t-1", "acme", cost_micros=5))
    assert state_of(bridge).status == "completed"


async def test_a_large_result_is_kept_on_disk_only_and_answers_in_full(bridge: Bridge) -> None:
    output = {
        f"part{n}": os.urandom(MAX_ENTRY_BYTES // 2).hex() for n in range(3)
    }  # incompressible
    await feed(bridge, topics.TASK_DECISIONS, decision(1))
    await feed(bridge, topics.TASK_RESULTS, result(output=output))
    assert bridge.tasks.recent.bytes == 0
    assert (state_of(bridge).result or {})["result"] == output


async def test_the_view_file_is_removed_on_stop(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), gateway_view_max_tasks=1)
    bridge = Bridge(settings, dead_letter_sink=Sink())
    for n in range(3):
        await feed(bridge, topics.TASK_DECISIONS, decision(1, f"t-{n}"))
    assert names(tmp_path)[0].startswith(f"gateway-view-{os.getpid()}-")
    await bridge.stop()
    assert names(tmp_path) == []


def test_the_files_of_dead_gateways_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead_pid = 2**22 + 1  # above the usual pid_max
    (tmp_path / f"gateway-view-{dead_pid}-ab12.sqlite").write_bytes(b"")
    (tmp_path / f"gateway-view-{os.getpid()}-cd34.sqlite").write_bytes(b"")
    (tmp_path / "other.sqlite").write_bytes(b"")
    remove_stale_stores(str(tmp_path))
    assert names(tmp_path) == [f"gateway-view-{os.getpid()}-cd34.sqlite", "other.sqlite"]


async def test_status_figures_are_kept_per_tenant_as_records_arrive(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), gateway_view_max_tasks=2)
    config = ConfigView(settings)
    config.tenants["acme"] = TenantConfig(
        tenant_id="acme", mrr_micros=10**9, latency_objective_ms=100, tags=tags()
    )
    bridge = Bridge(settings, Metrics(), tenants=config.tenants, dead_letter_sink=Sink())
    await feed(bridge, topics.TASK_DECISIONS, decision(1, "t-1"))
    await feed(bridge, topics.TASK_RESULTS, result("t-1", duration_ms=50, cost_micros=10_000))
    await feed(bridge, topics.TASK_DECISIONS, decision(1, "t-2"))
    await feed(bridge, topics.TASK_RESULTS, result("t-2", duration_ms=500, cost_micros=10_000))
    await feed(bridge, topics.TASK_DECISIONS, decision(1, "t-3", status="rejected"))
    await feed(bridge, topics.TASK_DECISIONS, decision(1, "t-3", status="rejected"))
    metrics = Metrics()
    report = status_report(config, bridge, metrics, StatusMonitor(bridge.settings, bridge, metrics))
    await bridge.stop()
    assert set(report) == {
        "status", "healthScore", "health", "uptimeS", "broker", "workersLive", "alerts",
        "worstTenant", "tenants", "breakers", "consumerLag", "workers",
    }  # fmt: skip
    acme = report["tenants"]["acme"]
    assert (acme["completed"], acme["failed"], acme["rejected"]) == (2, 0, 1)
    assert acme["cost"] == 0.02
    assert acme["successRatio"] == 1.0
    assert bridge.figures.per_tenant["acme"]["bad"] == 1  # over the 100 ms objective


def test_a_record_this_process_wrote_is_not_undone_by_an_older_one() -> None:
    """Read-your-writes: the reader, still behind, skips older records of a key just written."""
    settings = Settings()
    view = ConfigView(settings)
    topic = settings.topic(topics.TENANTS)

    def tenant_record(keys: tuple[str, ...]) -> bytes:
        tags = FinOpsTags(
            environment="t", tenant_id="acme", cost_center="c", owner="o", version="1"
        )
        config = TenantConfig(tenant_id="acme", mrr_micros=1, api_key_hashes=keys, tags=tags)
        return encode(envelope("tenant.configured", "acme:1", "acme", config, 1, "/t"))

    class Message:
        def __init__(self, offset: int, value: bytes) -> None:
            self.partition, self.offset, self.key, self.value = 0, offset, b"acme", value
            self.headers: list[tuple[str, bytes]] = []

    older, newer = tenant_record(()), tenant_record(("a" * 64,))
    view.apply_written(topic, b"acme", newer, 0, 1)
    asyncio.run(view._apply_or_dead_letter(topic, Message(0, older)))
    assert view.tenants["acme"].api_key_hashes == ("a" * 64,)
    asyncio.run(view._apply_or_dead_letter(topic, Message(1, newer)))  # its own echo
    asyncio.run(view._apply_or_dead_letter(topic, Message(2, older)))  # a later write wins
    assert view.tenants["acme"].api_key_hashes == ()
