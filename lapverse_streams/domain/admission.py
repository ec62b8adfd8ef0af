"""Admission rules in the spec's order: idempotency, flags, error budget, margin."""

from __future__ import annotations

from dataclasses import dataclass

from lapverse_streams.domain import budget, flags
from lapverse_streams.domain.ledger import Ledger
from lapverse_streams.domain.pricing import billing_period, usd
from lapverse_streams.events.models import DecisionReason, RateLimitState, TenantConfig


@dataclass(frozen=True)
class Policy:
    """Knobs of admission that come from settings."""

    margin_ratio: float = 0.70
    budget_min_events: int = 10
    rate_limit_per_s: float = 100.0  # a tenant's default rate limit
    rate_limit_burst: int = 500


@dataclass(frozen=True)
class Verdict:
    """Outcome of admission for a new request."""

    reason: DecisionReason
    http_status: int
    detail: str
    retry_after_s: int | None = None
    rate_limit: RateLimitState | None = None

    @property
    def accepted(self) -> bool:
        """True when the request is admitted."""
        return self.reason is DecisionReason.ACCEPTED


def admit(
    tenant_id: str,
    subject: str,
    flag_key: str,
    tenant: TenantConfig | None,
    flag_definition: dict[str, object] | None,
    ledger: Ledger,
    burn: budget.Burn,
    estimate_micros: int,
    now_ms: int,
    policy: Policy,
) -> Verdict:
    """Decide a request that idempotency has already let through.

    `subject` names what is gated in messages ("task type 'X'"); `flag_key` is its flag.
    """
    if tenant is None:
        detail = f"tenant {tenant_id!r} is not configured"
        return Verdict(DecisionReason.UNKNOWN_TENANT, 403, detail)
    if not flags.is_enabled(flag_key, flag_definition, tenant.tenant_id, now_ms // 1000):
        return Verdict(
            DecisionReason.FLAG_DISABLED, 404, f"{subject} is not enabled for this tenant"
        )
    if budget.budget_exhausted(
        burn, tenant.slo_target, tenant.slo_window_days, now_ms, policy.budget_min_events
    ):
        wait = budget.retry_after_s(burn, tenant.slo_window_days, now_ms)
        return Verdict(
            DecisionReason.BUDGET_EXHAUSTED, 503, "the tenant's error budget is exhausted", wait
        )
    forecast = ledger.forecast(billing_period(now_ms), estimate_micros)
    limit = int(tenant.mrr_micros * policy.margin_ratio)
    if forecast > limit:
        return Verdict(
            DecisionReason.MARGIN_EXCEEDED,
            402,
            f"forecast spend ${usd(forecast)} exceeds {policy.margin_ratio:.0%} "
            f"of MRR (${usd(limit)})",
        )
    return Verdict(DecisionReason.ACCEPTED, 202, "accepted")
