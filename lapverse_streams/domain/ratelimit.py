"""Per-tenant token buckets: `rate_per_s` requests a second on average, `burst` at once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lapverse_streams.events.models import RateLimitState


@dataclass
class TokenBucket:
    """One tenant's bucket; `tokens` refill continuously up to the burst."""

    tokens: float
    updated_ms: int

    def take(self, now_ms: int, rate_per_s: float, burst: int) -> RateLimitState | None:
        """Take one token, or say (without taking) how long until one is there."""
        elapsed_s = max(0, now_ms - self.updated_ms) / 1000
        self.tokens = min(float(burst), self.tokens + elapsed_s * rate_per_s)
        self.updated_ms = max(self.updated_ms, now_ms)
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return RateLimitState(
            limit=burst,
            remaining=0,
            reset_s=max(1, math.ceil((1 - self.tokens) / rate_per_s)),
            window_s=max(1, math.ceil(burst / rate_per_s)),
        )


def full_bucket(now_ms: int, burst: int) -> TokenBucket:
    """A bucket as a tenant first seen (or seen after a restart) gets it."""
    return TokenBucket(float(burst), now_ms)
