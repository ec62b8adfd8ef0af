"""One trace per request, end to end: the gateway's and the worker's spans over OTLP, and logs."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from lapverse_streams.variants.forecast import demo_input
from tests.conftest import ENGINE, Stack
from tests.integration.helpers import (
    create_tenant,
    post_task,
    task_body,
    wait_round_completed,
    wait_task,
)
from tests.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver

pytestmark = pytest.mark.kafka

GATEWAY, WORKER = "lapverse-gateway", "lapverse-worker"
LOG_FIELDS = {"time", "level", "logger", "message", "service"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver that outlives the stack, so its last spans still get through."""
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack(receiver: OtlpReceiver, stack_factory: Callable[..., Stack]) -> Stack:
    """A worker and a gateway exporting their spans to `receiver` every 100 ms."""
    return stack_factory(LAPVERSE_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="100").up()


@pytest.fixture(scope="module")
def exactly_once(receiver: OtlpReceiver, stack_factory: Callable[..., Stack]) -> Stack:
    """The same, the governor and the joiner committing in Kafka transactions."""
    return stack_factory(
        LAPVERSE_PROCESSING_GUARANTEE="exactly_once",
        LAPVERSE_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
    ).up()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


class Trace:
    """The spans of one trace, by name."""

    def __init__(self, spans: list[ReceivedSpan]) -> None:
        self.spans = spans

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReceivedSpan:
        (span,) = self.named(name)
        return span

    def counts(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for span in self.spans:
            counted[span.name] = counted.get(span.name, 0) + 1
        return counted


async def wait_trace(receiver: OtlpReceiver, trace_id: str, *names: str) -> Trace:
    """The trace once spans of each of `names` have arrived (and what came with them)."""

    def complete(spans: list[ReceivedSpan]) -> bool:
        return set(names) <= {s.name for s in spans if s.trace_id == trace_id}

    await asyncio.to_thread(receiver.wait_for, complete, 30)
    return Trace(receiver.spans(trace_id))


def ids_of(traceparent: str) -> tuple[str, str]:
    """Trace id and span id of a W3C `traceparent`."""
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, len(trace_id), len(span_id), len(flags)) == ("00", 32, 16, 2)
    return trace_id, span_id


def assert_chain(trace: Trace, *names: str) -> None:
    """Each named span is the child of the one named before it."""
    for parent, child in itertools.pairwise(names):
        assert trace.one(child).parent_span_id == trace.one(parent).span_id, (parent, child)


def log_lines(stack: Stack, name: str) -> list[dict[str, Any]]:
    """Every line a process wrote to stdout and stderr, each of which must be a JSON object."""
    lines = (stack.logs / f"{name}.log").read_text().splitlines()
    parsed = [orjson.loads(line) for line in lines]
    for line in parsed:
        assert set(line) >= LOG_FIELDS, line
    return parsed


async def test_a_task_is_one_trace_from_the_gateway_through_the_worker_and_its_logs(
    session: aiohttp.ClientSession, stack: Stack, receiver: OtlpReceiver
) -> None:
    api_key = await create_tenant(session, stack, "traced")
    status, headers, body = await post_task(session, stack, api_key, "traced", task_body("traced"))
    assert status == 202, body
    trace_id, server_span_id = ids_of(headers["traceparent"])
    task_id = orjson.loads(body)["taskId"]
    done = await wait_task(session, stack, api_key, "traced", task_id)
    assert done["status"] == "completed"

    trace = await wait_trace(
        receiver,
        trace_id,
        "POST /api/v2/tasks",
        "submit task.requested",
        "admit task",
        "execute task",
        "news_ai sentiment",
        "settle task",
    )
    assert_chain(
        trace,
        "POST /api/v2/tasks",
        "submit task.requested",
        "admit task",
        "execute task",
        "news_ai sentiment",
    )
    assert trace.one("settle task").parent_span_id == trace.one("execute task").span_id
    server = trace.one("POST /api/v2/tasks")
    assert (server.span_id, server.parent_span_id) == (server_span_id, "")
    assert {s.service for s in trace.spans} == {GATEWAY, WORKER}
    assert {s.service for s in trace.spans if s.name.startswith(("POST", "submit"))} == {GATEWAY}
    assert trace.one("admit task").attributes["lapverse.decision"] == "accepted"
    assert trace.one("admit task").attributes["lapverse.task_type"] == "ANALYSIS"
    assert trace.one("execute task").attributes["lapverse.outcome"] == "completed"
    assert trace.one("settle task").attributes["lapverse.outcome"] == "completed"
    about_task = [s for s in receiver.spans() if s.attributes.get("lapverse.task_id") == task_id]
    assert {s.trace_id for s in about_task} == {trace_id}  # one task, one trace
    print("spans of a task's trace:", trace.counts())

    worker_lines = log_lines(stack, "worker")
    assert {line["service"] for line in worker_lines} == {WORKER}
    assert any(line["logger"].startswith("faust.") for line in worker_lines)  # Faust's too
    (finished,) = [line for line in worker_lines if line.get("taskId") == task_id]
    assert finished["message"] == "task completed"
    assert finished["traceId"] == trace_id
    assert finished["spanId"] == trace.one("execute task").span_id
    assert {line["service"] for line in log_lines(stack, "gateway")} == {GATEWAY}


async def test_a_callers_traceparent_is_honoured_and_answered(
    session: aiohttp.ClientSession, stack: Stack, receiver: OtlpReceiver
) -> None:
    api_key = await create_tenant(session, stack, "caller")
    trace_id, caller_span_id = secrets.token_hex(16), secrets.token_hex(8)
    headers = {
        "Authorization": f"Bearer {api_key}",
        "X-Tenant-ID": "caller",
        "Idempotency-Key": "traced-1",
        "traceparent": f"00-{trace_id}-{caller_span_id}-01",
    }
    async with session.post(
        f"{stack.base_url}/api/v2/tasks", json=task_body("caller"), headers=headers
    ) as r:
        assert r.status == 202, await r.text()
        answered_trace_id, answered_span_id = ids_of(r.headers["traceparent"])
    assert answered_trace_id == trace_id
    async with session.post(f"{stack.base_url}/api/v2/tasks", json={}, headers=headers) as r:
        assert r.status == 400  # an error answers in the caller's trace too
        assert ids_of(r.headers["traceparent"])[0] == trace_id

    trace = await wait_trace(receiver, trace_id, "POST /api/v2/tasks", "admit task")
    servers = {s.span_id: s for s in trace.named("POST /api/v2/tasks")}
    server = servers[answered_span_id]  # the answer names its server span
    assert server.parent_span_id == caller_span_id
    assert trace.one("admit task").service == WORKER


async def test_a_rounds_trace_reaches_its_variants_join_and_settlement(
    session: aiohttp.ClientSession, stack: Stack, receiver: OtlpReceiver
) -> None:
    trace = await assert_round_traced(session, stack, receiver, "traced-arena")
    print("spans of a round's trace:", trace.counts())


@pytest.mark.skipif(ENGINE != "kafka", reason="Tansu has no transactions")
async def test_a_rounds_trace_reaches_its_settlement_under_exactly_once(
    session: aiohttp.ClientSession, receiver: OtlpReceiver, exactly_once: Stack
) -> None:
    await assert_round_traced(session, exactly_once, receiver, "traced-once")


async def assert_round_traced(
    session: aiohttp.ClientSession, stack: Stack, receiver: OtlpReceiver, tenant: str
) -> Trace:
    """Run a round; its trace goes gateway → admission → runs → join → settlement."""
    api_key = await create_tenant(session, stack, tenant)
    headers = {"Authorization": f"Bearer {api_key}", "X-Tenant-ID": tenant, "Idempotency-Key": "r1"}
    body = {"content": "Monthly airline passengers", "platforms": [], "input": demo_input()}
    async with session.post(
        f"{stack.base_url}/api/v2/self-compete", json=body, headers=headers
    ) as r:
        assert r.status == 202, await r.text()
        trace_id, _ = ids_of(r.headers["traceparent"])
        round_id = (await r.json())["competitionId"]
    done = await wait_round_completed(session, stack, api_key, tenant, round_id)

    trace = await wait_trace(
        receiver, trace_id, "admit competition", "join competition", "settle competition"
    )
    assert_chain(
        trace, "POST /api/v2/self-compete", "submit competition.requested", "admit competition"
    )
    admitted = trace.one("admit competition")
    runs = trace.named("run variant")
    assert len(runs) == len(done["competitors"]) == 4
    assert {run.parent_span_id for run in runs} == {admitted.span_id}
    assert {run.attributes["lapverse.variant"] for run in runs} == set(done["competitors"])
    joined = trace.one("join competition")
    assert joined.parent_span_id in {run.span_id for run in runs}
    assert joined.attributes["lapverse.variants_received"] == 4
    settled = trace.one("settle competition")
    assert settled.parent_span_id == joined.span_id
    assert settled.attributes["lapverse.champion"] == done["champion"]
    assert settled.attributes["lapverse.promotion"] == done["promotion"]["decision"]
    assert {s.service for s in trace.spans} == {GATEWAY, WORKER}
    return trace
