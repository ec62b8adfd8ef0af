"""Share API stand-in: `POST /v1/posts {"platform","text"}` -> 201 `{"postId","url"}`."""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from lapverse_streams.standins.control import error, read_json_object, service_app

PLATFORM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_TEXT_CHARS = 10_000


async def publish(request: web.Request) -> web.Response:
    """`POST /v1/posts`: accept the post and invent its id and address."""
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    platform, text = body.get("platform"), body.get("text")
    if not isinstance(platform, str) or not PLATFORM.match(platform):
        return error(422, "platform must be a lowercase name like 'twitter'")
    if not isinstance(text, str) or not text or len(text) > MAX_TEXT_CHARS:
        return error(422, f"text must be a non-empty string of at most {MAX_TEXT_CHARS} chars")
    post_id = f"{platform}-{uuid.uuid4().hex[:16]}"
    url = f"{request.url.origin()}/p/{platform}/{post_id}"
    return web.json_response({"postId": post_id, "url": url}, status=201)


def create_app(
    *,
    api_key: str | None = None,
    latency_ms: float = 0.0,
    failure_rate: float = 0.0,
    seed: int | None = None,
) -> web.Application:
    """The Share API stand-in, faults settable at run time via `/control`."""
    return service_app(
        "/v1/posts",
        publish,
        api_key=api_key,
        latency_ms=latency_ms,
        failure_rate=failure_rate,
        seed=seed,
    )
