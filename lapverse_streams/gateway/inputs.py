"""Reading untrusted request bodies: media type, JSON limits, models, known task types."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from lapverse_streams.events.limits import JsonLimits, LimitExceeded, check_document
from lapverse_streams.gateway.problems import Problem
from lapverse_streams.handlers.base import DRILLS, ENTRY_POINT_GROUP
from lapverse_streams.settings import Settings

M = TypeVar("M", bound=BaseModel)


def json_limits(settings: Settings) -> JsonLimits:
    """The bounds a request body must stay within, from settings."""
    return JsonLimits(
        max_depth=settings.max_json_depth,
        max_string_chars=settings.max_string_chars,
        max_array_items=settings.max_array_items,
    )


def known_task_types(settings: Settings) -> tuple[str, ...]:
    """Task types with a registered handler (names only), drills only when enabled."""
    names = {entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)}
    if not settings.drills_enabled:
        names -= DRILLS
    return tuple(sorted(names))


async def read_json(request: web.Request, limits: JsonLimits) -> Any:
    """The JSON body, or 400/413/415 saying what is wrong (400 names a broken limit)."""
    if request.content_type not in ("application/json", ""):
        raise Problem(415, "unsupported-media-type", "send application/json")
    raw = await request.read()
    if not raw:
        raise Problem(400, "invalid-body", "the request body is empty")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid-json", f"the body is not valid JSON: {exc}") from None
    try:
        check_document(raw, body, limits)
    except LimitExceeded as exc:
        raise Problem(400, exc.reason.replace("_", "-"), exc.detail) from None
    return body


def path_match(
    request: web.Request, name: str, pattern: str, code: str, detail: str, **extra: Any
) -> str:
    """The path parameter `name` when it matches `pattern`, else a 400 problem `code`."""
    value = request.match_info[name]
    if not re.fullmatch(pattern, value):
        raise Problem(400, code, detail, **extra)
    return value


def parse_body(model: type[M], body: Any) -> M:
    """Validate a JSON body against a model, or 400 naming the fields."""
    if not isinstance(body, dict):
        raise Problem(400, "invalid-body", "the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise Problem(400, "invalid-body", field_errors(exc), fields=field_list(exc)) from None


def field_errors(exc: ValidationError) -> str:
    """One line naming each invalid field."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


def field_list(exc: ValidationError) -> list[str]:
    """The invalid fields' dotted paths."""
    return sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
