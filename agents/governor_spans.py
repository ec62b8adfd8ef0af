"""The governor's spans: one per consumed record, each a child of the trace its record carries.

The governor decides a whole batch in domain code, which knows nothing of tracing. Each record
gets its span's context in its headers before the batch is decided, so what the record causes
(its decision, the variant runs, the completion) carries the span on; once the batch is
decided, each span is described from what its record produced, then ended.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from lapverse_streams.domain.batch import REPLAYED, BatchOutput, Inbound, Outbound
from lapverse_streams.domain.governor import Governor
from lapverse_streams.events.codec import header
from lapverse_streams.events.deadletter import REASON_HEADER
from lapverse_streams.observability.tracing import TRACEPARENT, extract_context, inject_headers

tracer = trace.get_tracer("lapverse.governor")
SPAN_NAMES = {
    "tasks": "admit task",
    "rounds": "admit competition",
    "results": "settle task",
    "joins": "settle competition",
    "commands": "decide champion command",
}
PROMOTED = frozenset({"champions", "flags", "kaggle"})  # what a promotion emits


class TracedGovernor(Governor):
    """The governor with a span per record of each batch: an admission or a settlement."""

    def process(self, batch: list[Inbound]) -> BatchOutput:
        """Decide the batch as the governor does, each record in its own span."""
        spans = [_start(record) for record in batch]
        traced = [
            dataclasses.replace(
                record, headers=inject_headers(record.headers, trace.set_span_in_context(span))
            )
            for record, span in zip(batch, spans, strict=True)
        ]
        try:
            out = super().process(traced)
            caused = _by_trace(out.records)
            for record, span in zip(traced, spans, strict=True):
                if span.is_recording():
                    indices = caused.get(header(record.headers, TRACEPARENT) or "", [])
                    _describe(span, record, [out.records[i] for i in indices])
                    if any(out.records[i].sink == "champions" for i in indices):
                        _promote(span, out, indices)
        finally:
            for span in spans:
                span.end()
        return out


def _start(record: Inbound) -> trace.Span:
    """A record's span, a child of the context its headers carry (not yet described)."""
    return tracer.start_span(
        SPAN_NAMES.get(record.source, "govern"),
        context=extract_context(record.headers),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "lapverse.tenant": (record.key or b"").decode("utf-8", "replace"),
            "messaging.system": "kafka",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
        },
    )


def _by_trace(records: list[Outbound]) -> dict[str, list[int]]:
    """Indices of the outputs by the `traceparent` they carry: what each record caused."""
    caused: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        traceparent = header(record.headers, TRACEPARENT)
        if traceparent:
            caused.setdefault(traceparent, []).append(index)
    return caused


def _describe(span: trace.Span, record: Inbound, outputs: list[Outbound]) -> None:
    """Attributes of a record's span from what it caused (a result also from itself)."""
    for output in outputs:
        if output.sink == "dlq":
            reason = header(output.headers, REASON_HEADER) or "processing_error"
            _set(span, {"lapverse.decision": "dead_letter", "lapverse.reason": reason})
            span.set_status(trace.StatusCode.ERROR, reason)
            return
    for output in outputs:
        if output.sink == "decisions":
            data = _data(output.value)
            request = data.get("request") or {}
            _set(
                span,
                {
                    "lapverse.decision": data.get("status"),
                    "lapverse.reason": data.get("reason"),
                    "lapverse.task_type": request.get("type"),
                    "lapverse.family": request.get("family"),
                    "lapverse.replayed": header(output.headers, REPLAYED) is not None,
                    "lapverse.variant_runs": sum(o.sink == "runs" for o in outputs),
                },
            )
        elif output.sink == "completions":
            data = _data(output.value)
            _set(
                span,
                {
                    "lapverse.competition_id": data.get("competitionId"),
                    "lapverse.family": data.get("family"),
                    "lapverse.champion": data.get("champion"),
                    "lapverse.promotion": (data.get("promotion") or {}).get("decision"),
                },
            )
    if record.source == "results":
        data = _data(record.value)
        _set(
            span,
            {
                "lapverse.task_id": data.get("taskId"),
                "lapverse.task_type": data.get("type"),
                "lapverse.outcome": data.get("status"),
            },
        )


def _promote(settlement: trace.Span, out: BatchOutput, indices: list[int]) -> None:
    """A promotion's span under its settlement; the champion, flag and Kaggle records carry it."""
    promoted = next(out.records[i] for i in indices if out.records[i].sink == "champions")
    data = _data(promoted.value)
    span = tracer.start_span("promote champion", context=trace.set_span_in_context(settlement))
    _set(
        span,
        {
            "lapverse.tenant": data.get("tenant"),
            "lapverse.family": data.get("family"),
            "lapverse.champion": data.get("champion"),
            "lapverse.previous": data.get("previous"),
            "lapverse.sequence": data.get("sequence"),
            "lapverse.rollout_percent": data.get("rolloutPercent"),
        },
    )
    context = trace.set_span_in_context(span)
    for i in indices:
        output = out.records[i]
        if output.sink in PROMOTED:
            out.records[i] = dataclasses.replace(
                output, headers=inject_headers(output.headers, context)
            )
    span.end()


def _data(value: bytes | None) -> Mapping[str, Any]:
    """The CloudEvent `data` of a record value; empty when it has none."""
    try:
        event = orjson.loads(value or b"{}")
    except orjson.JSONDecodeError:
        return {}
    data = event.get("data") if isinstance(event, dict) else None
    return data if isinstance(data, dict) else {}


def _set(span: trace.Span, attributes: Mapping[str, Any]) -> None:
    """Set the attributes that have a value of a type a span takes."""
    kept: dict[str, AttributeValue] = {
        key: value
        for key, value in attributes.items()
        if isinstance(value, str | bool | int | float)
    }
    span.set_attributes(kept)
