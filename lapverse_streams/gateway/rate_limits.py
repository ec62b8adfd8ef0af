"""The draft IETF RateLimit and RateLimit-Policy headers of a tenant's token bucket."""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from lapverse_streams.events.models import TenantConfig
from lapverse_streams.gateway.problems import Problem
from lapverse_streams.settings import Settings

POLICY = "RateLimit-Policy"
STATE = "RateLimit"


def policy_value(limit: int, window_s: int) -> str:
    """RateLimit-Policy: the bucket holds `limit` requests and refills in `window_s`."""
    return f'"tenant";q={limit};w={window_s}'


def tenant_policy(tenant: TenantConfig, settings: Settings) -> str:
    """The tenant's RateLimit-Policy from its configuration, or the settings' defaults."""
    rate_per_s = tenant.rate_limit_per_s or settings.rate_limit_per_s
    burst = tenant.burst or settings.rate_limit_burst
    return policy_value(burst, max(1, math.ceil(burst / rate_per_s)))


def decision_headers(decision: dict[str, Any]) -> dict[str, str]:
    """RateLimit-Policy and RateLimit of a decision that carries its bucket (a 429)."""
    state = decision.get("rateLimit")
    if not state:
        return {}
    return {
        POLICY: policy_value(state["limit"], state["windowS"]),
        STATE: f'"tenant";r={state["remaining"]};t={state["resetS"]}',
    }


async def with_policy(answer: Awaitable[web.Response], policy: str) -> web.Response:
    """Await a POST's answer and add RateLimit-Policy to it, whether it succeeds or fails."""
    try:
        response = await answer
    except Problem as problem:
        problem.headers.setdefault(POLICY, policy)
        raise
    response.headers.setdefault(POLICY, policy)
    return response
