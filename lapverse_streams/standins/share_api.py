"""Share API stand-in: `POST /v1/posts {"platform","text"}` -> 201 `{"postId","url"}`.

An `Idempotency-Key` header (1 to 255 characters, else 400) makes a repeat harmless, as with
Stripe: the same key and body answer the first post again with 200, the same key with another
platform or text answers 422. The last 10,000 keys are remembered. Without the header every
request is a new post.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

from lapverse_streams.standins.control import Handler, error, read_json_object, service_app

PLATFORM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_TEXT_CHARS = 10_000
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
REMEMBERED_KEYS = 10_000


@dataclass(frozen=True)
class Reply:
    """The first answer to an idempotency key, and the fingerprint of the body it answered."""

    fingerprint: str
    post: dict[str, str]


class Replies:
    """The reply per idempotency key; past `capacity` keys the least recently used is forgotten."""

    def __init__(self, capacity: int = REMEMBERED_KEYS) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._replies: OrderedDict[str, Reply] = OrderedDict()

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, key: str) -> Reply | None:
        """The reply remembered for `key`, now the most recently used."""
        reply = self._replies.get(key)
        if reply is not None:
            self._replies.move_to_end(key)
        return reply

    def put(self, key: str, reply: Reply) -> None:
        """Remember `reply` for `key`, forgetting the least recently used key beyond capacity."""
        self._replies[key] = reply
        self._replies.move_to_end(key)
        if len(self._replies) > self.capacity:
            self._replies.popitem(last=False)


def fingerprint(platform: str, text: str) -> str:
    """sha256 of the post's body, to tell a repeat from a reused key."""
    return hashlib.sha256(f"{platform}\x00{text}".encode()).hexdigest()


def new_post(request: web.Request, platform: str) -> dict[str, str]:
    """Invent the id and address of a new post."""
    post_id = f"{platform}-{uuid.uuid4().hex[:16]}"
    return {"postId": post_id, "url": f"{request.url.origin()}/p/{platform}/{post_id}"}


def idempotent_reply(
    replies: Replies, key: str, request: web.Request, platform: str, text: str
) -> web.Response:
    """201 with a new post for a new key, 200 with the first post for a repeat, 422 for a reuse."""
    body = fingerprint(platform, text)
    earlier = replies.get(key)
    if earlier is None:
        post = new_post(request, platform)
        replies.put(key, Reply(body, post))
        return web.json_response(post, status=201)
    if earlier.fingerprint != body:
        return error(
            422, f"{IDEMPOTENCY_HEADER} {key!r} was already used with another platform or text"
        )
    return web.json_response(earlier.post, status=200)


def publisher(replies: Replies) -> Handler:
    """The `POST /v1/posts` handler, remembering its idempotency keys in `replies`."""

    async def publish(request: web.Request) -> web.Response:
        """`POST /v1/posts`: accept the post and invent its id and address, once per key."""
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
            return error(400, f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_CHARS} characters")
        body = await read_json_object(request)
        if isinstance(body, web.Response):
            return body
        platform, text = body.get("platform"), body.get("text")
        if not isinstance(platform, str) or not PLATFORM.match(platform):
            return error(422, "platform must be a lowercase name like 'twitter'")
        if not isinstance(text, str) or not text or len(text) > MAX_TEXT_CHARS:
            return error(422, f"text must be a non-empty string of at most {MAX_TEXT_CHARS} chars")
        if key is None:
            return web.json_response(new_post(request, platform), status=201)
        return idempotent_reply(replies, key, request, platform, text)

    return publish


def create_app(
    *,
    api_key: str | None = None,
    latency_ms: float = 0.0,
    failure_rate: float = 0.0,
    seed: int | None = None,
    remembered_keys: int = REMEMBERED_KEYS,
) -> web.Application:
    """The Share API stand-in, faults settable at run time via `/control`."""
    return service_app(
        "/v1/posts",
        publisher(Replies(remembered_keys)),
        api_key=api_key,
        latency_ms=latency_ms,
        failure_rate=failure_rate,
        seed=seed,
    )
