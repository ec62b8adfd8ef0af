"""CloudEvents codec: envelopes to and from orjson bytes, with typed data."""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from lapverse_streams.events.catalog import EVENT_TYPES
from lapverse_streams.events.limits import DEFAULT_LIMITS, JsonLimits, LimitExceeded, check_document
from lapverse_streams.events.models import CloudEvent, Model, short_name, type_name

M = TypeVar("M", bound=Model)
Headers = list[tuple[str, bytes]]


class PoisonMessage(Exception):
    """A record that can never be processed: its reason goes to the dead-letter topic."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def now_rfc3339(now_ms: int) -> str:
    """RFC 3339 UTC timestamp with milliseconds."""
    stamp = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(
    short: str, event_id: str, subject: str, data: Model, now_ms: int, source: str
) -> CloudEvent:
    """Wrap typed data in a CloudEvent of type io.lapverse.<short>.v1."""
    return CloudEvent(
        id=event_id,
        source=source,
        type=type_name(short),
        subject=subject,
        time=now_rfc3339(now_ms),
        data=data.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def encode(event: CloudEvent) -> bytes:
    """Serialize an envelope with orjson."""
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))


def encode_event(
    short: str, event_id: str, subject: str, data: Model, now_ms: int, source: str
) -> bytes:
    """`encode(envelope(...))` in one step, byte for byte: the data is dumped once and no
    envelope model is built (the hot path's events are our own, valid by construction)."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": type_name(short),
            "subject": subject,
            "time": now_rfc3339(now_ms),
            "datacontenttype": "application/json",
            "data": data.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
    )


def decode(raw: bytes | None, limits: JsonLimits = DEFAULT_LIMITS) -> tuple[CloudEvent, str]:
    """Parse bytes into an envelope and its short type name, or raise PoisonMessage.

    `limits.max_depth` applies to the data, so the envelope around it may be one level deeper.
    """
    if raw is None:
        raise PoisonMessage("empty", "record has no value")
    try:
        obj: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage("not_json", str(exc)) from None
    try:
        check_document(raw, obj, _around_data(limits))
    except LimitExceeded as exc:
        raise PoisonMessage(exc.reason, exc.detail) from None
    if not isinstance(obj, dict):
        raise PoisonMessage("wrong_schema", "a CloudEvent must be a JSON object")
    try:
        event = CloudEvent.model_validate(obj)
    except ValidationError as exc:
        raise PoisonMessage("wrong_schema", _errors(exc)) from None
    short = short_name(event.type)
    if short is None or short not in EVENT_TYPES:
        raise PoisonMessage("unknown_type", f"unknown event type {event.type!r}")
    return event, short


@functools.lru_cache(maxsize=8)
def _around_data(limits: JsonLimits) -> JsonLimits:
    """The limits of an envelope whose data has `limits`: one level deeper."""
    return replace(limits, max_depth=limits.max_depth + 1)


def parse_data(event: CloudEvent, model: type[M]) -> M:
    """Validate an envelope's data against its model, or raise PoisonMessage."""
    try:
        return model.model_validate(event.data)
    except ValidationError as exc:
        raise PoisonMessage("wrong_schema", _errors(exc)) from None


def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def trace_of(headers: Headers | None) -> Headers:
    """The `traceparent` header of a record, to carry its trace on to what it causes."""
    return [(key, value) for key, value in headers or () if key == "traceparent" and value]


def header(headers: Headers | None, name: str) -> str | None:
    """First value of a Kafka header as text."""
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None
