"""OpenTelemetry tracer setup, OTLP/HTTP export and trace context in Kafka headers."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_TRACES_PATH = "/v1/traces"
_global_lock = threading.Lock()


def setup_tracing(service_name: str, environment: str, otlp_endpoint: str | None) -> TracerProvider:
    """Build a tracer provider, exporting over OTLP/HTTP when an endpoint is given."""
    resource = Resource.create(
        {"service.name": service_name, "deployment.environment": environment}
    )
    provider = TracerProvider(resource=resource)
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


def inject_headers(headers: list[tuple[str, bytes]] | None = None) -> list[tuple[str, bytes]]:
    """Return `headers` plus the current trace context (W3C `traceparent`, `tracestate`)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
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


def current_trace_id() -> str | None:
    """Return the 32-hex trace id of the current span, or None outside a valid span."""
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None
