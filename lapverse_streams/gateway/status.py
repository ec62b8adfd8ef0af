"""GET /api/status: health score, SLO and cost per tenant, connectivity."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from lapverse_streams.clock import now_ms
from lapverse_streams.config_view import ConfigView
from lapverse_streams.domain.budget import budget_remaining, burn_rate
from lapverse_streams.domain.pricing import usd
from lapverse_streams.gateway.bridge import Bridge
from lapverse_streams.gateway.health import (
    MAX_POINTS,
    WINDOWS_S,
    Health,
    History,
    Snapshot,
    as_json,
    downsample,
    health_score,
    label_of,
    summarize,
)
from lapverse_streams.gateway.view import empty_figures
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.settings import Settings

log = logging.getLogger(__name__)
LONG_HISTORY = "lapverse:health_score:avg5m"  # recording rule, grafana/alerts
SELF_ALERT = "LapverseHealthScoreLow"  # fires on the score: counting it would hold it down

STALE_AFTER_MS = 30_000
SEVERITY = {"closed": 0, "half_open": 1, "open": 2}  # worst state first when merging workers


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


class StatusMonitor:
    """The gateway's health: the score now, its history, firing alerts, and their gauges.

    A loop records a snapshot every `LAPVERSE_HEALTH_INTERVAL_S` (10 s); with
    `LAPVERSE_PROMETHEUS_URL` set it also reads the firing alerts from Prometheus for the
    score, and answers the 7d and 30d history windows from Prometheus (which outlives this
    process) rather than from its own five-minute means.
    """

    def __init__(self, settings: Settings, bridge: Bridge, metrics: Metrics) -> None:
        self.settings = settings
        self.bridge = bridge
        self.metrics = metrics
        self.history = History(settings.health_interval_s)
        self.alerts: list[dict[str, str]] = []  # firing: alertname, severity, tenant
        self.alerts_source = "prometheus" if settings.prometheus_url else "none"
        self.started_ms = now_ms()

    def health(self, now: int) -> Health:
        """The score over the recent window and the current state."""
        breakers, _, workers = worker_view(self.bridge.workers, now)
        health = health_score(
            self.bridge.recent.figures(now),
            self.settings.default_latency_objective_ms,
            [a.get("severity", "ticket") for a in self.alerts],
            breakers,
            self.bridge.connected,
        )
        self.metrics.health_score.set(health.score)
        self.metrics.workers_live.set(sum(1 for w in workers if w["live"]))
        self.metrics.broker_connected.set(1 if self.bridge.connected else 0)
        return health

    async def run(self) -> None:
        """Sample the health (and the alerts) until cancelled."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            while True:
                if self.settings.prometheus_url:
                    await self._read_alerts(session)
                now = now_ms()
                self.history.record(now, self.health(now))
                await asyncio.sleep(self.settings.health_interval_s)

    async def _read_alerts(self, session: aiohttp.ClientSession) -> None:
        url = self.settings.prometheus_url.rstrip("/") + "/api/v1/alerts"
        try:
            async with session.get(url) as response:
                body = await response.json()
            self.alerts = [
                {k: a["labels"].get(k, "") for k in ("alertname", "severity", "tenant")}
                for a in body["data"]["alerts"]
                if a.get("state") == "firing" and a["labels"].get("alertname") != SELF_ALERT
            ]
            self.alerts_source = "prometheus"
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            log.warning("firing alerts unreadable", extra={"url": url, "error": repr(exc)})
            self.alerts_source = "unavailable"

    async def history_report(self, window: str) -> dict[str, Any]:
        """Snapshots and the trend of a window (1h, 6h, 24h, 7d or 30d)."""
        now = now_ms()
        samples, source = self.history.window(window, now), "gateway"
        if self.settings.prometheus_url and WINDOWS_S[window] > WINDOWS_S["24h"]:
            from_prometheus = await self._prometheus_history(window, now)
            if from_prometheus is not None:
                samples, source = from_prometheus, "prometheus"
        return {
            "window": window,
            "source": source,
            "intervalS": self.settings.health_interval_s,
            "trend": summarize(samples),
            "snapshots": downsample(samples),
        }

    async def _prometheus_history(self, window: str, now: int) -> list[Snapshot] | None:
        seconds = WINDOWS_S[window]
        step = max(60, seconds // MAX_POINTS)
        params = {
            "query": f"avg_over_time({LONG_HISTORY}[{step}s])",
            "start": str((now / 1000) - seconds),
            "end": str(now / 1000),
            "step": str(step),
        }
        url = self.settings.prometheus_url.rstrip("/") + "/api/v1/query_range"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.get(url, params=params) as response,
            ):
                body = await response.json()
            result = body["data"]["result"]
            if not result:  # no such series: Prometheus runs without the project's rules
                return None
            return [
                Snapshot(int(float(t) * 1000), float(v), label_of(round(float(v))))
                for t, v in result[0]["values"]
            ]
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError, IndexError):
            return None


def status_report(
    config: ConfigView, bridge: Bridge, metrics: Metrics, monitor: StatusMonitor
) -> dict[str, Any]:
    """What an operator wants at a glance (per-tenant figures kept by the bridge as it reads)."""
    now = now_ms()
    per_tenant = bridge.figures.per_tenant
    breakers, lag, workers = worker_view(bridge.workers, now)
    health = monitor.health(now)
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
        "status": health.status,
        "healthScore": health.score,
        "health": as_json(health),
        "uptimeS": round((now - monitor.started_ms) / 1000),
        "broker": {"connected": bridge.connected},
        "workersLive": sum(1 for w in workers if w["live"]),
        "alerts": {"source": monitor.alerts_source, "firing": monitor.alerts},
        "worstTenant": health.window.worst_tenant,
        "tenants": tenants,
        "breakers": breakers,
        "consumerLag": lag,
        "workers": workers,
    }
