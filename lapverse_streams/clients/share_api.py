"""Share API: publish a text to a platform, behind a circuit breaker, with an in-memory twin."""

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

    async def publish(self, platform: str, text: str) -> Post:
        """Publish `text` on `platform`; never raises for service trouble (returns the fallback)."""
        ...


class ShareAPIClient(GuardedClient):
    """Share API over HTTP: `POST {base_url}/v1/posts`."""

    service = SERVICE
    default_timeout_ms = DEFAULT_TIMEOUT_MS
    default_failure_threshold = DEFAULT_FAILURE_THRESHOLD
    default_reset_timeout_ms = DEFAULT_RESET_TIMEOUT_MS

    async def publish(self, platform: str, text: str) -> Post:
        """Publish `text` on `platform`, or return a fallback post."""

        async def post() -> Post:
            answer = await self._post("/v1/posts", {"platform": platform, "text": text})
            return parse_post(platform, answer)

        return await self.breaker.call(post, lambda: fallback_post(platform))


@dataclass
class InMemoryShareAPI:
    """Share API in memory: numbered posts, or fallback posts when down."""

    available: bool = True
    state: BreakerState = "closed"
    posts: list[tuple[Post, str]] = field(default_factory=list)

    async def publish(self, platform: str, text: str) -> Post:
        """Record the post and return it."""
        if not self.available:
            post = fallback_post(platform)
        else:
            post_id = f"{platform}-{len(self.posts) + 1}"
            post = Post(platform, post_id, f"memory://{platform}/{post_id}")
        self.posts.append((post, text))
        return post
