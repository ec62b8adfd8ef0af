"""JSON-lines logging with trace correlation and redaction of secrets and personal data."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

REDACTED = "[REDACTED]"
_HANDLER_NAME = "lapverse-json-stderr"
_SENSITIVE_KEYS = frozenset({"password", "token", "email", "ip", "ssn", "apikey", "cookies"})
_SENSITIVE_SUFFIXES = ("token", "password", "secret", "apikey", "authorization", "cookie")
# A header written out as text: keep its name and auth scheme, mask the credential.
_AUTH_HEADER = re.compile(
    r"""\b((?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?:([A-Za-z][A-Za-z0-9-]*)\s+)?"""
    r"""([^\s"',;}]+)""",
    re.IGNORECASE,
)
_BASIC_CREDENTIAL = re.compile(r"\b(Basic)\s+([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])", re.I)
_TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"""\b((?:set-)?cookie["']?\s*[:=]\s*["']?)[^"'\r\n]+""", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\1 {REDACTED}"),
    (
        re.compile(
            r"\b([A-Za-z_-]*(?:api[_-]?key|token|password|passwd|secret)=)[^&\s\"']+",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"lv_[A-Za-z0-9_-]{32,}"), REDACTED),
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}"), REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9]{16,}"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"), REDACTED),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), REDACTED),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), REDACTED),
)
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _is_sensitive_key(key: str) -> bool:
    """Whether a mapping key names a value that must never be logged."""
    name = key.lower().replace("_", "").replace("-", "")
    return name in _SENSITIVE_KEYS or name.endswith(_SENSITIVE_SUFFIXES)


def _mask_auth_header(match: re.Match[str]) -> str:
    """`Authorization: <scheme> <credential>` with the credential masked."""
    scheme = f"{match[2]} " if match[2] else ""
    return f"{match[1]}{scheme}{REDACTED}"


def _mask_basic_credential(match: re.Match[str]) -> str:
    """`Basic <base64 of user:password>` with the credential masked; other words kept."""
    try:
        decoded = base64.b64decode(match[2] + "=" * (-len(match[2]) % 4), validate=True)
    except binascii.Error:
        return match[0]
    return f"{match[1]} {REDACTED}" if b":" in decoded else match[0]


def redact_text(text: str) -> str:
    """Mask credentials, cookies, API keys and email addresses inside free text."""
    text = _AUTH_HEADER.sub(_mask_auth_header, text)
    text = _BASIC_CREDENTIAL.sub(_mask_basic_credential, text)
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_mapping(mapping: Mapping[Any, object]) -> dict[Any, object]:
    """Return a copy of `mapping` with sensitive keys and secret-looking strings masked."""
    return {
        key: REDACTED if isinstance(key, str) and _is_sensitive_key(key) else redact(value)
        for key, value in mapping.items()
    }


def redact(value: object) -> object:
    """Return a copy of `value` with sensitive keys and secret-looking strings masked."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return redact_mapping(value)
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, tuple):
        return tuple(redact(item) for item in value)
    return value


def _json_default(value: object) -> str:
    """Serialise unknown objects by their redacted `str()`."""
    return redact_text(str(value))


class JsonFormatter(logging.Formatter):
    """Formats each record as one redacted JSON object carrying the current trace ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a single JSON line."""
        entry = redact_mapping(
            {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRS}
        )
        entry.update(
            time=datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            level=record.levelname,
            logger=record.name,
            message=self._message(record),
            service=self._service,
        )
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["traceId"] = trace.format_trace_id(span_context.trace_id)
            entry["spanId"] = trace.format_span_id(span_context.span_id)
        if record.exc_info:
            entry["exc"] = redact_text(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact_text(self.formatStack(record.stack_info))
        return orjson.dumps(entry, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        """Interpolate redacted args so `%s` of a dict cannot leak a password."""
        message = str(record.msg if isinstance(record.msg, str) else redact(record.msg))
        if record.args:
            message = message % redact(record.args)
        return redact_text(message)


def json_handler(service: str) -> logging.Handler:
    """A handler writing redacted JSON lines for `service` to the current stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(service))
    return handler


def logging_config(service: str, level: str = "INFO") -> dict[str, Any]:
    """A `dictConfig` schema with the JSON handler alone, for frameworks that set up logging."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {_HANDLER_NAME: {"()": json_handler, "service": service}},
        "root": {"level": level.upper(), "handlers": [_HANDLER_NAME]},
    }


def configure_logging(service: str, level: str = "INFO") -> None:
    """Install the JSON formatter on one root stderr handler, replacing any earlier one."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
        handler.close()
    root.addHandler(json_handler(service))
    root.setLevel(level.upper())
