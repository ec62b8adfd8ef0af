"""Trace context in Kafka headers and real OTLP/HTTP export to a local collector."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from lapverse_streams.observability.tracing import (
    current_trace_id,
    extract_context,
    inject_headers,
    setup_tracing,
)


class FakeCollector:
    """An OTLP/HTTP collector on a free local port that records trace export bodies."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.content_types: list[str] = []
        self.url = ""

    async def on_traces(self, request: web.Request) -> web.Response:
        """Record one export request and acknowledge it."""
        self.bodies.append(await request.read())
        self.content_types.append(request.content_type)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


@pytest.fixture
async def collector() -> AsyncIterator[FakeCollector]:
    """A running fake collector, stopped after the test."""
    fake = FakeCollector()
    app = web.Application()
    app.router.add_post("/v1/traces", fake.on_traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    yield fake
    await runner.cleanup()


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
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("lapverse", "t1")]),
    )
    with trace.use_span(NonRecordingSpan(parent)):
        headers = dict(inject_headers())
    assert headers["tracestate"] == b"lapverse=t1"

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


def test_setup_tracing_sets_resource_and_global_provider_once() -> None:
    first = setup_tracing("svc-one", "test", None)
    second = setup_tracing("svc-two", "test", None)
    try:
        assert first.resource.attributes["service.name"] == "svc-one"
        assert first.resource.attributes["deployment.environment"] == "test"
        assert trace.get_tracer_provider() is not second
    finally:
        first.shutdown()
        second.shutdown()


async def test_spans_are_exported_over_otlp_http(collector: FakeCollector) -> None:
    provider = setup_tracing("lapverse-test", "ci", collector.url)
    with provider.get_tracer("test").start_as_current_span("admission.check"):
        pass

    flushed = await asyncio.to_thread(provider.force_flush)
    await asyncio.to_thread(provider.shutdown)

    assert flushed
    assert collector.content_types == ["application/x-protobuf"]
    request = ExportTraceServiceRequest.FromString(collector.bodies[0])
    (resource_spans,) = request.resource_spans
    attributes = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert attributes["service.name"] == "lapverse-test"
    assert attributes["deployment.environment"] == "ci"
    names = [span.name for scope in resource_spans.scope_spans for span in scope.spans]
    assert names == ["admission.check"]
