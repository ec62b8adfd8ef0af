"""Share API: publish a text to a platform, behind a circuit breaker, with an in-memory twin.

Every post carries an idempotency key, so a post repeated after a crash (the joiner publishes
before its Kafka commit) returns the first post instead of publishing twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from lapverse_streams.clients.breaker import (
    BreakerState,
    GuardedClient,
    ServiceFailure,
)

SERVICE = "share_api"
DEFAULT_TIMEOUT_MS = 2_000
DEFAULT_FAILURE_THRESHOLD = 30
DEFAULT_RESET_TIMEOUT_MS = 30_000
FALLBACK_PREFIX = "fallback-"
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class Post:
    """A published post; `fallback` marks a post that was not actually published."""

    platform: str
    post_id: str
    url: str | None
    fallback: bool = False


def fallback_post(platform: str) -> Post:
    """What callers get when the Share API cannot publish: a clearly marked local id."""
    return Post(platform, f"{FALLBACK_PREFIX}{platform}-{uuid.uuid4()}", None, fallback=True)


def parse_post(platform: str, answer: Mapping[str, Any]) -> Post:
    """The service's `{"postId","url"}`; anything else is a ServiceFailure."""
    post_id, url = answer.get("postId"), answer.get("url")
    if not isinstance(post_id, str) or not post_id or not isinstance(url, str | None):
        raise ServiceFailure(f"unexpected post answer {dict(answer)!r:.200}")
    return Post(platform, post_id, url)


class ShareAPI(Protocol):
    """Publishing to social platforms."""

    async def publish(self, platform: str, text: str, idempotency_key: str) -> Post:
        """Publish `text` on `platform` once per `idempotency_key`: a repeat gets the first post.

        Never raises for service trouble (returns the fallback).
        """
        ...


class ShareAPIClient(GuardedClient):
    """Share API over HTTP: `POST {base_url}/v1/posts` with an `Idempotency-Key` header."""

    service = SERVICE
    default_timeout_ms = DEFAULT_TIMEOUT_MS
    default_failure_threshold = DEFAULT_FAILURE_THRESHOLD
    default_reset_timeout_ms = DEFAULT_RESET_TIMEOUT_MS

    async def publish(self, platform: str, text: str, idempotency_key: str) -> Post:
        """Publish `text` on `platform` once per `idempotency_key`, or return a fallback post."""
        payload = {"platform": platform, "text": text}
        headers = {IDEMPOTENCY_HEADER: idempotency_key}

        async def post() -> Post:
            return parse_post(platform, await self._post("/v1/posts", payload, headers))

        return await self.breaker.call(post, lambda: fallback_post(platform))


@dataclass
class InMemoryShareAPI:
    """Share API in memory: numbered posts, one per idempotency key, or fallback posts when down."""

    available: bool = True
    state: BreakerState = "closed"
    posts: list[tuple[Post, str]] = field(default_factory=list)
    by_key: dict[str, Post] = field(default_factory=dict)

    async def publish(self, platform: str, text: str, idempotency_key: str) -> Post:
        """The earlier post of a known key; else record the post (a fallback when down)."""
        if idempotency_key in self.by_key:
            return self.by_key[idempotency_key]
        if not self.available:
            post = fallback_post(platform)
        else:
            post_id = f"{platform}-{len(self.posts) + 1}"
            post = Post(platform, post_id, f"memory://{platform}/{post_id}")
            self.by_key[idempotency_key] = post
        self.posts.append((post, text))
        return post
