"""Trace context in Kafka headers, sampling, OTLP/HTTP export and the spans of the gateway."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from lapverse_streams.gateway.problems import Problem, json_response
from lapverse_streams.gateway.server import traced
from lapverse_streams.observability.tracing import (
    consumer_span,
    current_trace_id,
    extract_context,
    inject_headers,
    setup_tracing,
    traceparent,
)
from lapverse_streams.settings import Settings
from tests.otlp import OtlpReceiver, finished_spans, global_provider, otlp_receiver

PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
W3C = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def parent_header(sampled: bool = True) -> str:
    """A caller's `traceparent`."""
    return f"00-{PARENT_TRACE}-{PARENT_SPAN}-{'01' if sampled else '00'}"


@pytest.fixture
def finished() -> Iterator[InMemorySpanExporter]:
    """The spans that end during the test, through the global provider."""
    with finished_spans() as exporter:
        yield exporter


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A local OTLP/HTTP receiver."""
    with otlp_receiver() as running:
        yield running


def hex_ids(span: ReadableSpan) -> tuple[str, str, str]:
    """Trace id, span id and parent span id ("" for a root) of a finished span."""
    context = span.get_span_context()
    assert context is not None
    parent = trace.format_span_id(span.parent.span_id) if span.parent else ""
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id), parent


def test_inject_extract_round_trip_keeps_trace_id() -> None:
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("produce"):
        sent_trace_id = current_trace_id()
        headers = inject_headers([("tenantId", b"acme"), ("traceparent", b"stale")])
    provider.shutdown()

    assert sent_trace_id is not None
    assert [key for key, _ in headers] == ["tenantId", "traceparent"]
    assert all(isinstance(value, bytes) for _, value in headers)
    remote = trace.get_current_span(extract_context(headers)).get_span_context()
    assert remote.is_remote
    assert trace.format_trace_id(remote.trace_id) == sent_trace_id


def test_tracestate_is_carried_and_str_values_are_accepted() -> None:
    parent = SpanContext(
        trace_id=int(PARENT_TRACE, 16),
        span_id=int(PARENT_SPAN, 16),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("lapverse", "t1")]),
    )
    with trace.use_span(NonRecordingSpan(parent)):
        headers = dict(inject_headers())
    assert headers["tracestate"] == b"lapverse=t1"
    assert traceparent(NonRecordingSpan(parent)) == parent_header()

    as_text = [(key, value.decode()) for key, value in headers.items()]
    remote = trace.get_current_span(extract_context(as_text)).get_span_context()
    assert remote.trace_id == parent.trace_id
    assert remote.span_id == parent.span_id
    assert remote.trace_state.get("lapverse") == "t1"


@pytest.mark.parametrize(
    "headers", [None, [], [("other", b"x")], [("traceparent", None)], [("traceparent", b"junk")]]
)
def test_extract_without_valid_context_gives_no_span(
    headers: list[tuple[str, bytes | None]] | None,
) -> None:
    span = trace.get_current_span(extract_context(headers))
    assert not span.get_span_context().is_valid


def test_no_trace_id_outside_a_span() -> None:
    assert current_trace_id() is None
    assert inject_headers() == []
    assert traceparent(trace.INVALID_SPAN) is None


def test_a_consumer_span_continues_the_trace_its_record_carries() -> None:
    provider = TracerProvider()
    record_headers = [("traceparent", parent_header().encode())]
    with consumer_span(provider.get_tracer("t"), "handle", record_headers) as span:
        caused = inject_headers()
        context = span.get_span_context()
    provider.shutdown()

    assert trace.format_trace_id(context.trace_id) == PARENT_TRACE
    assert caused == [("traceparent", traceparent(span).encode())]  # type: ignore[union-attr]


def test_setup_tracing_sets_the_resource_and_never_replaces_the_global_provider() -> None:
    first = global_provider()
    provider = setup_tracing("svc-one", "test", None)
    try:
        assert provider.resource.attributes["service.name"] == "svc-one"
        assert provider.resource.attributes["deployment.environment"] == "test"
        assert trace.get_tracer_provider() is first
    finally:
        provider.shutdown()


def test_sampling_drops_new_traces_below_the_ratio_but_follows_a_sampled_caller() -> None:
    never = setup_tracing("svc", "test", None, sample_ratio=0.0)
    always = setup_tracing("svc", "test", None, sample_ratio=1.0)
    sampled = extract_context([("traceparent", parent_header().encode())])
    unsampled = extract_context([("traceparent", parent_header(sampled=False).encode())])
    try:
        root = never.get_tracer("t").start_span("root")
        followed = never.get_tracer("t").start_span("child", context=sampled)
        assert not root.is_recording()
        assert root.get_span_context().is_valid  # its id still reaches logs and headers
        assert followed.is_recording()
        assert trace.format_trace_id(followed.get_span_context().trace_id) == PARENT_TRACE
        assert always.get_tracer("t").start_span("root").is_recording()
        assert not always.get_tracer("t").start_span("child", context=unsampled).is_recording()
    finally:
        never.shutdown()
        always.shutdown()


@pytest.mark.parametrize(("raw", "ratio"), [(None, 1.0), ("0", 0.0), ("0.25", 0.25), ("1", 1.0)])
def test_the_sample_ratio_setting(raw: str | None, ratio: float) -> None:
    env = {} if raw is None else {"LAPVERSE_TRACE_SAMPLE_RATIO": raw}
    assert Settings.from_env(env).trace_sample_ratio == ratio


@pytest.mark.parametrize("raw", ["-0.1", "1.5", "nan"])
def test_a_sample_ratio_outside_zero_to_one_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="LAPVERSE_TRACE_SAMPLE_RATIO"):
        Settings.from_env({"LAPVERSE_TRACE_SAMPLE_RATIO": raw})


async def test_spans_are_exported_over_otlp_http(receiver: OtlpReceiver) -> None:
    provider = setup_tracing("lapverse-test", "ci", receiver.url)
    with provider.get_tracer("test").start_as_current_span("admission.check"):
        pass

    flushed = await asyncio.to_thread(provider.force_flush)
    await asyncio.to_thread(provider.shutdown)

    assert flushed
    assert receiver.content_types == ["application/x-protobuf"]
    request = ExportTraceServiceRequest.FromString(receiver.bodies[0])
    (resource_spans,) = request.resource_spans
    attributes = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert attributes["service.name"] == "lapverse-test"
    assert attributes["deployment.environment"] == "ci"
    assert [span.name for span in receiver.spans()] == ["admission.check"]


@pytest.fixture
async def gateway_url() -> AsyncIterator[str]:
    """A bare app behind the gateway's tracing middleware: one page, one problem."""

    async def ok(request: web.Request) -> web.Response:
        return json_response({"ok": True})

    async def broken(request: web.Request) -> web.Response:
        raise Problem(503, "not-ready", "not yet")

    app = web.Application(middlewares=[traced])
    app.router.add_get("/ok", ok)
    app.router.add_get("/items/{item_id}", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_every_answer_carries_its_server_span_as_traceparent(
    gateway_url: str, finished: InMemorySpanExporter
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway_url}/ok") as r:
            fresh = r.headers["traceparent"]
        async with session.get(f"{gateway_url}/missing") as r:
            missing = r.status, r.headers["traceparent"]

    by_name = {span.name: span for span in finished.get_finished_spans()}
    server = by_name["GET /ok"]
    match = W3C.fullmatch(fresh)
    assert match is not None
    assert int(match[3], 16) & 1  # sampled
    assert hex_ids(server) == (match[1], match[2], "")
    assert server.kind == trace.SpanKind.SERVER
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert missing[0] == 404
    assert W3C.fullmatch(missing[1])
    assert by_name["GET"].status.status_code == trace.StatusCode.UNSET  # a 4xx is not ours


async def test_a_callers_traceparent_is_honoured_on_success_and_on_error(
    gateway_url: str, finished: InMemorySpanExporter
) -> None:
    headers = {"traceparent": parent_header(), "baggage": "user=someone"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gateway_url}/items/1", headers=headers) as r,
    ):
        assert r.status == 503
        answered = r.headers["traceparent"]

    (server,) = finished.get_finished_spans()
    trace_id, span_id, parent_id = hex_ids(server)
    assert (trace_id, parent_id) == (PARENT_TRACE, PARENT_SPAN)
    assert answered == f"00-{PARENT_TRACE}-{span_id}-01"
    assert server.name == "GET /items/{item_id}"
    assert server.status.status_code == trace.StatusCode.ERROR
