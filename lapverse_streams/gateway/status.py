"""GET /api/status: health score, SLO and cost per tenant, connectivity."""

from __future__ import annotations

from typing import Any

from lapverse_streams.config_view import ConfigView
from lapverse_streams.domain.budget import budget_remaining, burn_rate
from lapverse_streams.domain.pricing import usd
from lapverse_streams.gateway.bridge import Bridge
from lapverse_streams.observability.metrics import Metrics


def health_score(error_ratio: float, broker_up: bool) -> tuple[int, str]:
    """0-100 score and its label from the error ratio and broker connectivity."""
    score = 100 - min(60, int(error_ratio * 300)) - (40 if not broker_up else 0)
    label = "healthy" if score >= 80 else "degraded" if score >= 50 else "unhealthy"
    return score, label


def empty_entry() -> dict[str, int]:
    """Counters of one tenant in the status report."""
    return {"completed": 0, "failed": 0, "rejected": 0, "costMicros": 0, "good": 0, "bad": 0}


def status_report(config: ConfigView, bridge: Bridge, metrics: Metrics) -> dict[str, Any]:
    """What an operator wants at a glance."""
    per_tenant: dict[str, dict[str, Any]] = {}
    for state in bridge.tasks.values():
        entry = per_tenant.setdefault(state.tenant, empty_entry())
        if state.result:
            entry[state.result["status"]] += 1
            entry["costMicros"] += state.result["costMicros"]
            tenant = config.tenants.get(state.tenant)
            objective = tenant.latency_objective_ms if tenant else 30_000
            good = state.result["status"] == "completed" and state.result["durationMs"] <= objective
            entry["good" if good else "bad"] += 1
        elif state.decision["status"] == "rejected":
            entry["rejected"] += 1
    finished = sum(e["completed"] + e["failed"] for e in per_tenant.values())
    failed = sum(e["failed"] for e in per_tenant.values())
    score, label = health_score(failed / finished if finished else 0.0, bridge.connected)
    tenants = {}
    for tenant_id, tenant in config.tenants.items():
        e = per_tenant.get(tenant_id, empty_entry())
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
        "breakers": {},
    }
