"""Per-tenant token buckets: `rate_per_s` requests a second on average, `burst` at once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lapverse_streams.domain.admission import Verdict
from lapverse_streams.domain.journal import Journal
from lapverse_streams.events.models import DecisionReason, RateLimitState, TenantConfig


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


class RateLimiter:
    """The token buckets of the tenants one governor owns; each write is noted in `journal`."""

    def __init__(self, default_per_s: float, default_burst: int, journal: Journal) -> None:
        self.default_per_s = default_per_s
        self.default_burst = default_burst
        self._journal = journal
        self._buckets: dict[str, TokenBucket] = {}  # in memory: a restart refills them

    def limits(self, tenant: TenantConfig) -> tuple[float, int]:
        """The tenant's rate and burst: its own, else the defaults."""
        return tenant.rate_limit_per_s or self.default_per_s, tenant.burst or self.default_burst

    def check(self, tenant: TenantConfig, now_ms: int) -> Verdict | None:
        """Take one request from the tenant's bucket, or the 429 verdict when it is empty."""
        rate, burst = self.limits(tenant)
        bucket = self._buckets.get(tenant.tenant_id)
        if bucket is None:
            self._journal.note(self._buckets, tenant.tenant_id)
            bucket = self._buckets[tenant.tenant_id] = full_bucket(now_ms, burst)
        self._journal.note(vars(bucket), "tokens")
        self._journal.note(vars(bucket), "updated_ms")
        limited = bucket.take(now_ms, rate, burst)
        if limited is None:
            return None
        detail = f"over the tenant's rate limit of {rate:g} requests/s (burst {burst})"
        return Verdict(DecisionReason.RATE_LIMITED, 429, detail, limited.reset_s, limited)
