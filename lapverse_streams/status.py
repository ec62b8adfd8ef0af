"""`lapverse status`: the gateway's health report, readable in a terminal."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import aiohttp

from lapverse_streams.settings import Settings

COLOURS = {"healthy": "\033[32m", "degraded": "\033[33m", "unhealthy": "\033[31m"}
RESET = "\033[0m"
TOP_TENANTS = 5


async def print_status(settings: Settings, out: TextIO | None = None) -> int:
    """Print the status; exit code 0 healthy, 1 degraded, 2 unhealthy or unreachable."""
    out = out or sys.stdout
    base = f"http://{settings.gateway_host}:{settings.gateway_port}"
    # the admin token (LAPVERSE_ADMIN_TOKEN) shows every tenant; without it, health only
    headers = {"Authorization": f"Bearer {settings.admin_token}"} if settings.admin_token else {}
    timeout = aiohttp.ClientTimeout(total=5)
    try:
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            report = await get_json(session, f"{base}/api/status")
            history = await get_json(session, f"{base}/api/status/history?window=1h")
            alerts = None
            if settings.prometheus_url:
                alerts = await firing_alerts(session, settings.prometheus_url)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        print(f"gateway unreachable at {base}: {exc}", file=out)
        return 2
    render(report, history, alerts, out, colour=out.isatty())
    return {"healthy": 0, "degraded": 1}.get(str(report["status"]), 2)


async def get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """GET a JSON object; a non-200 answer raises ValueError with its detail."""
    async with session.get(url) as response:
        body: dict[str, Any] = await response.json(content_type=None)
        if response.status != 200:
            raise ValueError(f"{url} answered {response.status}: {body.get('detail', '')}")
        return body


async def firing_alerts(session: aiohttp.ClientSession, prometheus_url: str) -> list[str] | None:
    """The firing alerts Prometheus holds ("name (severity, tenant)"), or None if unreadable."""
    try:
        body = await get_json(session, prometheus_url.rstrip("/") + "/api/v1/alerts")
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    firing = []
    for alert in body.get("data", {}).get("alerts", []):
        if alert.get("state") != "firing":
            continue
        labels = alert.get("labels", {})
        where = ", ".join(v for v in (labels.get("severity"), labels.get("tenant")) if v)
        firing.append(f"{labels.get('alertname', '?')} ({where})" if where else labels["alertname"])
    return sorted(firing)


def render(
    report: dict[str, Any],
    history: dict[str, Any],
    alerts: list[str] | None,
    out: TextIO,
    colour: bool,
) -> None:
    """The report as lines of text; ANSI colour only when `colour` (a terminal)."""
    label = str(report["status"])
    shown = f"{COLOURS.get(label, '')}{label}{RESET}" if colour else label
    print(f"{shown}  health score {report['healthScore']}/100", file=out)
    terms = report.get("health", {}).get("terms", {})
    lost = ", ".join(f"{name} -{points}" for name, points in terms.items() if points)
    if lost:
        print(f"  points lost: {lost}", file=out)
    trend = history.get("trend", {})
    if trend.get("samples"):
        print(
            f"  last hour: min {trend['min']:.0f}, mean {trend['mean']:.0f}, "
            f"max {trend['max']:.0f}, {trend['direction']}",
            file=out,
        )
    print(f"uptime {_duration(report.get('uptimeS', 0))}", file=out)
    print(f"broker connected: {report['broker']['connected']}", file=out)
    print(f"live workers: {report.get('workersLive', 'n/a')}", file=out)
    if alerts is None:
        alerts = [a["alertname"] for a in report.get("alerts", {}).get("firing", [])] or None
    if alerts is None:
        print("firing alerts: unknown (set LAPVERSE_PROMETHEUS_URL)", file=out)
    else:
        print(f"firing alerts: {len(alerts)}", file=out)
        for alert in alerts:
            print(f"  {alert}", file=out)
    for name, state in sorted(report.get("breakers", {}).items()):
        print(f"  breaker {name:<12} {state}", file=out)
    for topic, behind in sorted(report.get("consumerLag", {}).items()):
        print(f"  lag {topic:<40} {behind}", file=out)
    tenants = report.get("tenants")
    if tenants is None:
        print("  (set LAPVERSE_ADMIN_TOKEN to see every tenant)", file=out)
        return
    by_burn = sorted(tenants.items(), key=lambda item: -item[1]["burnRate"])[:TOP_TENANTS]
    if by_burn:
        print(f"top tenants by burn rate (of {len(tenants)}):", file=out)
    for tenant_id, t in by_burn:
        ratio = "n/a" if t["successRatio"] is None else f"{t['successRatio']:.2%}"
        print(
            f"  {tenant_id:<20} burn {t['burnRate']:>6.2f}  success {ratio:>8} "
            f"(SLO {t['sloTarget']:.2%})  cost ${t['cost']:.2f} of MRR ${t['mrr']:.2f}",
            file=out,
        )


def _duration(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
