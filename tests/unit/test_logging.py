"""Redaction and JSON-line shape of the structured logger."""

from __future__ import annotations

import base64
import io
import logging
import logging.config
import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from lapverse_streams.observability.logging import (
    REDACTED,
    JsonFormatter,
    configure_logging,
    logging_config,
    redact,
)
from lapverse_streams.observability.tracing import consumer_span

API_KEY = "lv_" + "Ab3_-x" * 6  # 36 url-safe chars after the prefix
ISSUED_KEY = "lv_" + "Qw3_-e" * 7 + "r"  # as the gateway issues them: 43 url-safe chars
BASIC = base64.b64encode(b"ops:hunter2").decode()
STRIPE_LIVE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
LogLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, LogLines]]:
    """A private logger writing JSON lines into memory, and a reader for them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc-test"))
    logger = logging.getLogger("lapverse.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def lines() -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in stream.getvalue().splitlines()]

    yield logger, lines
    logger.removeHandler(handler)
    logger.propagate = True


@pytest.fixture
def restore_root_logger() -> Iterator[logging.Logger]:
    """The root logger, with its handlers and level put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_redacts_sensitive_keys_at_any_depth() -> None:
    payload = {
        "user": {"name": "ann", "profile": [{"contact": {"email": "a@b.io", "ssn": "123"}}]},
        "auth": ({"password": "hunter2"}, {"ip": "10.0.0.1"}),
        "count": 3,
    }
    assert redact(payload) == {
        "user": {"name": "ann", "profile": [{"contact": {"email": REDACTED, "ssn": REDACTED}}]},
        "auth": ({"password": REDACTED}, {"ip": REDACTED}),
        "count": 3,
    }
    assert payload["auth"] == ({"password": "hunter2"}, {"ip": "10.0.0.1"})  # not mutated


@pytest.mark.parametrize(
    "key", ["Password", "TOKEN", "Email", "IP", "SSN", "apiToken", "access_token", "x-token"]
)
def test_key_match_is_case_insensitive_and_covers_token_names(key: str) -> None:
    assert redact({key: "secret", "tip": "keep", "max_tokens": 10}) == {
        key: REDACTED,
        "tip": "keep",
        "max_tokens": 10,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key={API_KEY} used", f"key={REDACTED} used"),
        ("Authorization: Bearer abc.def-ghi", f"Authorization: Bearer {REDACTED}"),
        ("openai sk-" + "a1B2" * 8 + " done", f"openai {REDACTED} done"),
        ("gh token ghp_" + "x" * 36, f"gh token {REDACTED}"),
        ("mail ann.lee+x@example.co.uk now", f"mail {REDACTED} now"),
        ("lv_short is not a key", "lv_short is not a key"),
    ],
)
def test_secret_looking_strings_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact({"note": [text]}) == {"note": [expected]}


@pytest.mark.parametrize(
    "key",
    ["authorization", "Authorization", "PROXY-AUTHORIZATION", "cookie", "Cookie", "Set-Cookie",
     "cookies", "x-api-key", "client_secret", "session_cookie"],
)  # fmt: skip
def test_credential_keys_are_redacted_at_any_depth(key: str) -> None:
    payload = {"request": [{"headers": {key: "anything at all", "Accept": "json"}}]}
    assert redact(payload) == {"request": [{"headers": {key: REDACTED, "Accept": "json"}}]}


def test_header_multidicts_are_redacted_like_dicts() -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict([("Authorization", f"Basic {BASIC}"), ("Cookie", "sid=1"), ("X", "y")])
    assert redact({"headers": headers}) == {
        "headers": {"Authorization": REDACTED, "Cookie": REDACTED, "X": "y"}
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Authorization: Basic {BASIC}", f"Authorization: Basic {REDACTED}"),
        (f"authorization=basic {BASIC}", f"authorization=basic {REDACTED}"),
        (f"with creds Basic {BASIC}.", f"with creds Basic {REDACTED}."),
        (f"{{'Authorization': '{ISSUED_KEY}'}}", f"{{'Authorization': '{REDACTED}'}}"),
        (f"Proxy-Authorization: Digest {BASIC}", f"Proxy-Authorization: Digest {REDACTED}"),
        ("Cookie: sid=abc123; theme=dark", f"Cookie: {REDACTED}"),
        ("Set-Cookie: sid=abc123; Path=/; HttpOnly", f"Set-Cookie: {REDACTED}"),
        ("{'cookie': 'sid=abc', 'x': 'y'}", f"{{'cookie': '{REDACTED}', 'x': 'y'}}"),
        (f"charge with {STRIPE_LIVE} now", f"charge with {REDACTED} now"),
        ("sk_test_" + "a1" * 12, REDACTED),
        ("rk_live_" + "Z9" * 12, REDACTED),
        (f"key {ISSUED_KEY}", f"key {REDACTED}"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", f"Bearer {REDACTED}"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", f"jwt {REDACTED}"),
        ("GET /x?api_key=abc123&page=2", f"GET /x?api_key={REDACTED}&page=2"),
        ("retry with access_token=abc.def", f"retry with access_token={REDACTED}"),
        ("a basic analysis of growth", "a basic analysis of growth"),
        ("max_tokens=10 cookies baked", "max_tokens=10 cookies baked"),
    ],
)
def test_credentials_in_text_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_logging_config_installs_the_json_handler_alone(
    restore_root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    restore_root_logger.addHandler(logging.StreamHandler())
    logging.config.dictConfig(logging_config("svc-worker", "info"))
    (handler,) = restore_root_logger.handlers
    assert isinstance(handler.formatter, JsonFormatter)
    assert restore_root_logger.level == logging.INFO

    logging.getLogger("faust.test").info(
        "sent %s", f"Authorization: Basic {BASIC}", extra={"headers": {"Cookie": "sid=1"}}
    )

    (raw,) = capsys.readouterr().err.splitlines()
    line = orjson.loads(raw)
    assert line["service"] == "svc-worker"
    assert line["message"] == f"sent Authorization: Basic {REDACTED}"
    assert line["headers"] == {"Cookie": REDACTED}


def test_json_line_shape_outside_a_span(json_logger: tuple[logging.Logger, LogLines]) -> None:
    logger, lines = json_logger
    logger.warning("charged %s for %s", 42, {"token": "t0k", "tenant": "acme"})

    (line,) = lines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line["level"] == "WARNING"
    assert line["logger"] == "lapverse.test.json"
    assert line["service"] == "svc-test"
    assert line["message"] == f"charged 42 for {{'token': '{REDACTED}', 'tenant': 'acme'}}"
    assert "traceId" not in line
    assert "spanId" not in line
    assert "exc" not in line


def test_extra_fields_and_messages_are_redacted(
    json_logger: tuple[logging.Logger, LogLines],
) -> None:
    logger, lines = json_logger
    logger.info(
        "key %s from ops@lapverse.dev",
        API_KEY,
        extra={"tenantId": "acme", "request": {"headers": {"Authorization": f"Bearer {API_KEY}"}}},
    )

    (line,) = lines()
    assert line["message"] == f"key {REDACTED} from {REDACTED}"
    assert line["tenantId"] == "acme"
    assert line["request"] == {"headers": {"Authorization": REDACTED}}
    assert API_KEY not in orjson.dumps(line).decode()


def test_trace_and_span_ids_come_from_the_current_span(
    json_logger: tuple[logging.Logger, LogLines],
) -> None:
    logger, lines = json_logger
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("work") as span:
        logger.info("inside")
    provider.shutdown()

    (line,) = lines()
    context = span.get_span_context()
    assert line["traceId"] == trace.format_trace_id(context.trace_id)
    assert line["spanId"] == trace.format_span_id(context.span_id)
    assert re.fullmatch(r"[0-9a-f]{32}", line["traceId"])


def test_a_line_logged_while_a_record_is_handled_carries_the_records_trace(
    json_logger: tuple[logging.Logger, LogLines],
) -> None:
    logger, lines = json_logger
    provider = TracerProvider()
    record_trace = "0af7651916cd43dd8448eb211c80319c"
    headers = [("traceparent", f"00-{record_trace}-b7ad6b7169203331-01".encode())]
    with consumer_span(provider.get_tracer("test"), "handle", headers) as span:
        logger.info("task completed", extra={"taskId": "t1"})
    logger.info("between records")
    provider.shutdown()

    inside, outside = lines()
    assert inside["traceId"] == record_trace
    assert inside["spanId"] == trace.format_span_id(span.get_span_context().span_id)
    assert inside["taskId"] == "t1"
    assert "traceId" not in outside


def test_exception_traceback_is_included_and_redacted(
    json_logger: tuple[logging.Logger, LogLines],
) -> None:
    logger, lines = json_logger
    try:
        raise ValueError(f"bad key {API_KEY}")
    except ValueError:
        logger.exception("failed")

    (line,) = lines()
    assert line["level"] == "ERROR"
    assert "ValueError: bad key [REDACTED]" in line["exc"]
    assert API_KEY not in line["exc"]


def test_configure_logging_is_idempotent(
    restore_root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("svc-a")
    configure_logging("svc-b", level="debug")
    json_handlers = [
        h for h in restore_root_logger.handlers if isinstance(h.formatter, JsonFormatter)
    ]
    assert len(json_handlers) == 1
    assert restore_root_logger.level == logging.DEBUG

    logging.getLogger("lapverse.test.root").debug("hello", extra={"password": "p"})

    (raw,) = capsys.readouterr().err.splitlines()
    line = orjson.loads(raw)
    assert line["service"] == "svc-b"
    assert line["message"] == "hello"
    assert line["password"] == REDACTED
