"""OpenTelemetry tracer setup, OTLP/HTTP export and trace context in Kafka headers."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

_TRACES_PATH = "/v1/traces"
_global_lock = threading.Lock()
_W3C = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"
Attributes = Mapping[str, AttributeValue]


def setup_tracing(
    service_name: str, environment: str, otlp_endpoint: str | None, sample_ratio: float = 1.0
) -> TracerProvider:
    """Build a tracer provider, exporting over OTLP/HTTP when an endpoint is given.

    A trace started here is sampled at `sample_ratio`; one continued from a caller or a record
    follows the caller's decision, so a trace is kept or dropped whole.
    """
    resource = Resource.create(
        {"service.name": service_name, "deployment.environment": environment}
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio))
    )
    if otlp_endpoint:
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(_traces_url(otlp_endpoint)))
        )
    with _global_lock:
        # Only the first provider becomes global; the API refuses (and logs) later overrides.
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
    return provider


def _traces_url(otlp_endpoint: str) -> str:
    """Append the OTLP traces path to a collector base URL unless already present."""
    base = otlp_endpoint.rstrip("/")
    return base if base.endswith(_TRACES_PATH) else base + _TRACES_PATH


def inject_headers(
    headers: list[tuple[str, bytes]] | None = None, context: Context | None = None
) -> list[tuple[str, bytes]]:
    """Return `headers` plus the trace context (W3C `traceparent`, `tracestate`).

    The context is the current one unless `context` is given.
    """
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    injected = {key.lower() for key in carrier}
    kept = [(key, value) for key, value in headers or () if key.lower() not in injected]
    return kept + [(key, value.encode()) for key, value in carrier.items()]


def extract_context(headers: Sequence[tuple[str, bytes | str | None]] | None) -> Context:
    """Return the trace context carried by Kafka-style `headers` (empty if none)."""
    carrier: dict[str, str] = {}
    for key, value in headers or ():
        if value is None:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        carrier[key.lower()] = text
    return propagate.extract(carrier)


def caller_context(headers: Mapping[str, str]) -> Context:
    """The W3C trace context an HTTP caller sent (`traceparent`, `tracestate`); nothing else.

    A caller's baggage is not taken: it would travel on in every record the request causes.
    """
    return _W3C.extract(headers)


@contextmanager
def consumer_span(
    tracer: trace.Tracer,
    name: str,
    headers: Sequence[tuple[str, bytes | str | None]] | None,
    attributes: Attributes | None = None,
) -> Iterator[trace.Span]:
    """A span, current while it lasts, for handling a record: a child of the trace it carries."""
    with tracer.start_as_current_span(
        name,
        context=extract_context(headers),
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield span


def traceparent(span: trace.Span) -> str | None:
    """The W3C `traceparent` of `span` (`00-<trace id>-<span id>-<flags>`), None if invalid."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def current_trace_id() -> str | None:
    """Return the 32-hex trace id of the current span, or None outside a valid span."""
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None
