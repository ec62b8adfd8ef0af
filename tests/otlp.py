"""Where tests see spans: an OTLP/HTTP receiver on a free port, or the global provider's."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, flattened: ids in lowercase hex, the root's parent is ""."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error


class OtlpReceiver:
    """Accepts OTLP/HTTP protobuf trace exports (what OTLPSpanExporter sends) in a thread."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.content_types: list[str] = []
        self._spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL a tracer provider exports to (`/v1/traces` is added by the exporter)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> OtlpReceiver:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        """Every span received so far, or those of one trace."""
        with self._changed:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 30
    ) -> list[ReceivedSpan]:
        """Block until `done(spans)` holds for the spans received; raise TimeoutError if not."""
        with self._changed:
            if not self._changed.wait_for(lambda: done(self._spans), timeout_s):
                names = sorted({s.name for s in self._spans})
                raise TimeoutError(f"{len(self._spans)} spans received, never done: {names}")
            return list(self._spans)

    def receive(self, body: bytes, content_type: str) -> None:
        """Record one export request."""
        request = ExportTraceServiceRequest.FromString(body)
        spans = [
            ReceivedSpan(
                service=str(_attributes(resource_spans.resource.attributes)["service.name"]),
                name=span.name,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                attributes=_attributes(span.attributes),
                status_code=span.status.code,
            )
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._changed:
            self.bodies.append(body)
            self.content_types.append(content_type)
            self._spans.extend(spans)
            self._changed.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != TRACES_PATH:
                    self.send_error(404)
                    return
                receiver.receive(body, self.headers.get_content_type())
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test output is not the place for access lines."""

        return Handler


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A running receiver, stopped on exit."""
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def global_provider() -> TracerProvider:
    """The process's SDK provider, which the code's module tracers use (set here if unset)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "another SDK is the global provider"
    return provider


@contextmanager
def finished_spans() -> Iterator[InMemorySpanExporter]:
    """The spans the global provider ends meanwhile (its processor stays, exporting nothing)."""
    exporter = InMemorySpanExporter()
    global_provider().add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        exporter.shutdown()


def _attributes(values: Any) -> dict[str, Any]:
    """OTLP key-values as a plain dict."""
    return {kv.key: _value(kv.value) for kv in values}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
