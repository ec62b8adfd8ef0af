"""The worker's spans: each a child of the trace its record carries, carried on in what it sends."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents.executor import Executor, Retries
from agents.governor_spans import TracedGovernor
from agents.joiner import InMemoryRounds, Joiner
from agents.kaggle import KaggleAgent
from agents.services import TracedNewsAI
from agents.tournament import VariantRunner
from lapverse_streams.clients.kaggle import InMemoryKagglePipeline
from lapverse_streams.clients.share_api import InMemoryShareAPI
from lapverse_streams.domain.admission import Policy
from lapverse_streams.domain.batch import Inbound, Outbound
from lapverse_streams.domain.fair_queue import FairQueue
from lapverse_streams.events.codec import Headers, encode, envelope, header
from lapverse_streams.events.deadletter import Consumed
from lapverse_streams.events.models import TaskRequest, TenantConfig
from lapverse_streams.handlers.base import Outcome
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.observability.tracing import inject_headers
from lapverse_streams.variants.forecast import ForecastFamily
from tests.otlp import finished_spans
from tests.unit import test_governor, test_governor_rounds, test_joiner
from tests.unit.dead_letters import Letters
from tests.unit.test_executor import accepted, settle
from tests.unit.test_kaggle_stages import runner, stage_data

PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TAGS = test_joiner.tags("acme")


@pytest.fixture
def finished() -> Iterator[InMemorySpanExporter]:
    """The spans that end during the test, through the global provider."""
    with finished_spans() as exporter:
        yield exporter


def traceparent(span_id: str = PARENT_SPAN) -> tuple[str, bytes]:
    """A `traceparent` header of the test's trace."""
    return ("traceparent", f"00-{PARENT_TRACE}-{span_id}-01".encode())


def carried(headers: Headers) -> tuple[str, str]:
    """Trace id and span id of a record's `traceparent`."""
    value = header(headers, "traceparent")
    assert value is not None, headers
    _, trace_id, span_id, _ = value.split("-")
    return trace_id, span_id


def ids(span: ReadableSpan) -> tuple[str, str, str]:
    """Trace id, span id and parent span id ("" for a root) of a finished span."""
    context = span.get_span_context()
    assert context is not None
    parent = trace.format_span_id(span.parent.span_id) if span.parent else ""
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id), parent


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """The finished spans called `name`, in the order they ended."""
    return [s for s in exporter.get_finished_spans() if s.name == name]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    """A span's attributes as a plain dict."""
    return dict(span.attributes or {})


def traced(record: Inbound, span_id: str = PARENT_SPAN) -> Inbound:
    """`record` carrying the test's trace."""
    return dataclasses.replace(record, headers=[*record.headers, traceparent(span_id)])


def governor() -> TracedGovernor:
    return TracedGovernor(
        records={},
        ledgers={},
        burns={},
        tenants={
            "acme": TenantConfig(tenant_id="acme", mrr_micros=10**12, tags=test_joiner.tags("acme"))
        },
        flag_definitions={},
        policy=Policy(0.7, 3),
        environment="test",
        version="1",
        retention_ms=86_400_000,
        clock_ms=lambda: test_governor.NOW,
        families={"forecast": ForecastFamily()},
    )


def of(records: list[Outbound], sink: str) -> list[Outbound]:
    return [r for r in records if r.sink == sink]


def test_each_request_is_admitted_in_its_own_span_which_its_decision_carries(
    finished: InMemorySpanExporter,
) -> None:
    log = test_governor.Log()
    out = governor().process([traced(log.request("k1")), log.raw("tasks", b"{junk", [])])

    admitted, junk = named(finished, "admit task")
    trace_id, span_id, parent_id = ids(admitted)
    assert (trace_id, parent_id) == (PARENT_TRACE, PARENT_SPAN)
    assert attributes(admitted) | {
        "lapverse.decision": "accepted",
        "lapverse.reason": "accepted",
        "lapverse.task_type": "ANALYSIS",
        "lapverse.tenant": "acme",
    } == attributes(admitted)
    (decision,) = of(out.records, "decisions")
    assert carried(decision.headers) == (PARENT_TRACE, span_id)
    assert header(decision.headers, "lapverse-request-id") == "k1"

    assert ids(junk)[2] == ""  # no trace came with it: a trace of its own
    assert attributes(junk)["lapverse.decision"] == "dead_letter"
    assert attributes(junk)["lapverse.reason"] == "not_json"
    assert junk.status.status_code == trace.StatusCode.ERROR
    (letter,) = of(out.records, "dlq")
    assert carried(letter.headers)[1] == ids(junk)[1]


def test_a_result_is_settled_in_a_span_under_the_execution_that_sent_it(
    finished: InMemorySpanExporter,
) -> None:
    gov, log = governor(), test_governor.Log()
    (decision,) = of(gov.process([log.request("k1")]).records, "decisions")
    execution = "00f067aa0ba902b7"
    gov.process([traced(log.result(test_governor.decision_of(decision.value)), execution)])

    (settled,) = named(finished, "settle task")
    assert ids(settled)[0::2] == (PARENT_TRACE, execution)
    assert attributes(settled)["lapverse.outcome"] == "completed"
    assert attributes(settled)["lapverse.task_type"] == "ANALYSIS"


def test_a_round_is_settled_and_promoted_in_the_trace_of_its_join(
    finished: InMemorySpanExporter,
) -> None:
    gov, log = governor(), test_governor_rounds.Log()
    join_span = "00f067aa0ba902b7"
    for i in range(300):
        round_id = test_governor_rounds.admit_round(gov, log, f"r{i}")
        out = gov.process([traced(log.joined(round_id, "experimental"), join_span)])
        if of(out.records, "champions"):
            break
    else:
        pytest.fail("no promotion")

    settled = named(finished, "settle competition")[-1]
    (promoted,) = named(finished, "promote champion")
    assert ids(settled)[0::2] == (PARENT_TRACE, join_span)
    assert attributes(settled)["lapverse.promotion"] == "promoted"
    assert attributes(settled)["lapverse.champion"] == "experimental"
    assert ids(promoted)[2] == ids(settled)[1]
    assert attributes(promoted)["lapverse.champion"] == "experimental"
    (completed,) = of(out.records, "completions")
    assert carried(completed.headers) == (PARENT_TRACE, ids(settled)[1])
    for sink in ("champions", "flags", "kaggle"):
        (record,) = of(out.records, sink)
        assert carried(record.headers) == (PARENT_TRACE, ids(promoted)[1])


def consumed(value: bytes, key: str, span_id: str, offset: int = 0) -> Consumed:
    """A consumed record of the test's trace, sent from span `span_id`."""
    return Consumed("t", 0, offset, key.encode(), value, [traceparent(span_id)])


class Joins:
    """What the joiner sends, with the trace `register_joiner`'s send injects."""

    def __init__(self) -> None:
        self.headers: list[Headers] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.headers.append(inject_headers())


async def test_the_join_is_a_child_of_the_last_result_and_carries_the_round_on(
    finished: InMemorySpanExporter,
) -> None:
    rounds, joins = InMemoryRounds(), Joins()
    joiner = Joiner(
        rounds,
        joins.send,
        InMemoryShareAPI(),
        Letters().policy(),
        1_000,
        lambda: test_joiner.NOW_MS,
    )
    await joiner.process([consumed(test_joiner.run("c1", "acme", "a"), "c1", PARENT_SPAN)])
    assert rounds.data["c1"]["traceparent"] == traceparent()[1].decode()  # the round's trace

    results = [
        consumed(test_joiner.result("c1", "acme", v, 0.5), "c1", span, offset)
        for offset, (v, span) in enumerate([("a", "00000000000000a1"), ("b", "00000000000000b1")])
    ]
    await joiner.process(results)

    (joined,) = named(finished, "join competition")
    assert ids(joined)[0::2] == (PARENT_TRACE, "00000000000000b1")
    assert attributes(joined)["lapverse.variants_received"] == 2
    assert [carried(h) for h in joins.headers] == [(PARENT_TRACE, ids(joined)[1])]


async def test_a_round_closed_at_its_deadline_is_joined_in_its_stored_trace(
    finished: InMemorySpanExporter,
) -> None:
    clock = [test_joiner.NOW_MS]
    rounds, joins = InMemoryRounds(), Joins()
    joiner = Joiner(
        rounds, joins.send, InMemoryShareAPI(), Letters().policy(), 1_000, lambda: clock[0]
    )
    await joiner.process([consumed(test_joiner.run("c1", "acme", "a"), "c1", PARENT_SPAN)])
    clock[0] += 120_000
    await joiner.close_overdue({0})

    (joined,) = named(finished, "join competition")
    assert ids(joined)[0::2] == (PARENT_TRACE, PARENT_SPAN)
    assert attributes(joined)["lapverse.variants_received"] == 0
    assert [carried(h) for h in joins.headers] == [(PARENT_TRACE, ids(joined)[1])]


@pytest.fixture
async def news_ai_url() -> AsyncIterator[str]:
    """A News AI that finds everything positive."""

    async def sentiment(request: web.Request) -> web.Response:
        return web.json_response({"label": "positive", "score": 0.5, "confidence": 0.9})

    app = web.Application()
    app.router.add_post("/v1/sentiment", sentiment)
    server = web.AppRunner(app)
    await server.setup()
    await web.TCPSite(server, "127.0.0.1", 0).start()
    host, port = server.addresses[0][:2]
    yield f"http://{host}:{port}"
    await server.cleanup()


class AsksNewsAI:
    """A handler whose only work is a News AI call."""

    def __init__(self, news_ai: TracedNewsAI) -> None:
        self.news_ai = news_ai

    async def run(self, request: TaskRequest) -> Outcome:
        return Outcome({"label": (await self.news_ai.sentiment("good")).label})


class Sends:
    """The headers of what an agent sends."""

    def __init__(self) -> None:
        self.headers: list[Headers] = []

    async def send(self, key: bytes, value: bytes, headers: Headers) -> None:
        self.headers.append(headers)


async def test_execution_is_a_span_with_the_news_ai_call_under_it_and_its_result_carries_it(
    finished: InMemorySpanExporter, news_ai_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    progress, results = Sends(), Sends()
    async with TracedNewsAI(news_ai_url) as news_ai:
        ex = Executor(
            {"NOOP": AsksNewsAI(news_ai)},
            Retries(attempts=1, base_ms=1),
            FairQueue(4, 4),
            progress.send,
            results.send,
            Letters().policy(),
        )
        decision = accepted("acme", "t1")
        with caplog.at_level(logging.INFO, logger="agents.executor"):
            await ex.take(dataclasses.replace(decision, headers=[traceparent()]))
            await settle(ex)

    (executed,) = named(finished, "execute task")
    (called,) = named(finished, "news_ai sentiment")
    assert ids(executed)[0::2] == (PARENT_TRACE, PARENT_SPAN)
    assert ids(called)[2] == ids(executed)[1]
    assert called.kind == trace.SpanKind.CLIENT
    assert attributes(called)["lapverse.fallback"] is False
    assert attributes(executed)["lapverse.outcome"] == "completed"
    assert attributes(executed)["lapverse.attempts"] == 1
    assert [carried(h) for h in progress.headers + results.headers] == 2 * [
        (PARENT_TRACE, ids(executed)[1])
    ]
    (line,) = [r for r in caplog.records if r.getMessage() == "task completed"]
    assert line.taskId == "t1"  # type: ignore[attr-defined]


async def test_a_variant_run_is_a_span_whose_result_carries_it(
    finished: InMemorySpanExporter,
) -> None:
    results = Sends()
    variants = VariantRunner(
        {"forecast": ForecastFamily()}, results.send, Letters().policy(), Metrics()
    )
    await variants.process([consumed(test_joiner.run("c1", "acme", "a"), "c1", PARENT_SPAN)])

    (ran,) = named(finished, "run variant")
    assert ids(ran)[0::2] == (PARENT_TRACE, PARENT_SPAN)
    assert attributes(ran)["lapverse.variant"] == "a"
    assert attributes(ran)["lapverse.status"] == "timeout"  # its deadline is long past
    assert ran.status.status_code == trace.StatusCode.ERROR
    assert [carried(h) for h in results.headers] == [(PARENT_TRACE, ids(ran)[1])]


async def test_each_kaggle_stage_is_a_span_and_the_next_stage_continues_it(
    finished: InMemorySpanExporter,
) -> None:
    sent: list[Outbound] = []

    async def send(out: Outbound) -> None:
        sent.append(out)

    agent = KaggleAgent(runner(InMemoryKagglePipeline()), send, Letters().policy(), Metrics())
    value = encode(envelope("kaggle.sync", "c1:kaggle.sync", "acme", stage_data(), 1, "/t"))
    await agent.process([consumed(value, "c1", PARENT_SPAN)])

    (synced,) = named(finished, "kaggle sync")
    assert ids(synced)[0::2] == (PARENT_TRACE, PARENT_SPAN)
    assert attributes(synced)["lapverse.status"] == "completed"
    types = [orjson.loads(out.value or b"")["type"] for out in sent]
    assert types == ["io.lapverse.kaggle.sync.completed.v1", "io.lapverse.kaggle.evaluate.v1"]
    assert {carried(out.headers) for out in sent} == {(PARENT_TRACE, ids(synced)[1])}
