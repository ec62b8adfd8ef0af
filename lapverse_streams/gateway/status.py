"""GET /api/status: health score, SLO and cost per tenant, connectivity."""

from __future__ import annotations

from typing import Any

from lapverse_streams.clock import now_ms
from lapverse_streams.config_view import ConfigView
from lapverse_streams.domain.budget import budget_remaining, burn_rate
from lapverse_streams.domain.pricing import usd
from lapverse_streams.gateway.bridge import Bridge
from lapverse_streams.gateway.view import empty_figures
from lapverse_streams.observability.metrics import Metrics

STALE_AFTER_MS = 30_000
SEVERITY = {"closed": 0, "half_open": 1, "open": 2}


def health_score(
    error_ratio: float, broker_up: bool, breakers: dict[str, str] | None = None
) -> tuple[int, str]:
    """0-100 score and its label from errors, broker connectivity and breaker states."""
    breaker_penalty = sum(10 * SEVERITY.get(state, 0) for state in (breakers or {}).values())
    score = 100 - min(60, int(error_ratio * 300)) - (40 if not broker_up else 0)
    score = max(0, score - min(40, breaker_penalty))
    label = "healthy" if score >= 80 else "degraded" if score >= 50 else "unhealthy"
    return score, label


def worker_view(
    workers: dict[str, dict[str, Any]], now_ms: int
) -> tuple[dict[str, str], dict[str, int], list[dict[str, Any]]]:
    """Worst breaker states and summed consumer lag over the workers heard from lately."""
    breakers: dict[str, str] = {}
    lag: dict[str, int] = {}
    listed = []
    for worker_id, status in sorted(workers.items()):
        age_ms = now_ms - status["updatedAtMs"]
        listed.append(
            {
                "workerId": worker_id,
                "lastSeenS": round(age_ms / 1000, 1),
                "live": age_ms <= STALE_AFTER_MS,
                "assignedPartitions": status["assignedPartitions"],
            }
        )
        if age_ms > STALE_AFTER_MS:
            continue
        for name, state in status["breakers"].items():
            if SEVERITY.get(state, 0) >= SEVERITY.get(breakers.get(name, "closed"), 0):
                breakers[name] = state
        for topic, behind in status["consumerLag"].items():
            lag[topic] = lag.get(topic, 0) + behind
    return breakers, lag, listed


def status_report(config: ConfigView, bridge: Bridge, metrics: Metrics) -> dict[str, Any]:
    """What an operator wants at a glance (per-tenant figures kept by the bridge as it reads)."""
    per_tenant = bridge.figures.per_tenant
    finished = sum(e["completed"] + e["failed"] for e in per_tenant.values())
    failed = sum(e["failed"] for e in per_tenant.values())
    breakers, lag, workers = worker_view(bridge.workers, now_ms())
    score, label = health_score(failed / finished if finished else 0.0, bridge.connected, breakers)
    tenants = {}
    for tenant_id, tenant in config.tenants.items():
        e = per_tenant.get(tenant_id, empty_figures())
        done = e["completed"] + e["failed"]
        tenants[tenant_id] = {
            "sloTarget": tenant.slo_target,
            "successRatio": e["completed"] / done if done else None,
            "completed": e["completed"],
            "failed": e["failed"],
            "rejected": e["rejected"],
            "budgetRemaining": round(budget_remaining(e["good"], e["bad"], tenant.slo_target), 4),
            "burnRate": round(burn_rate(e["good"], e["bad"], tenant.slo_target), 4),
            "cost": usd(e["costMicros"]),
            "mrr": usd(tenant.mrr_micros),
        }
    return {
        "status": label,
        "healthScore": score,
        "broker": {"connected": bridge.connected},
        "tenants": tenants,
        "breakers": breakers,
        "consumerLag": lag,
        "workers": workers,
    }
