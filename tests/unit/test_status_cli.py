"""`lapverse status` against a gateway and a Prometheus served here, as an operator runs it."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lapverse_streams.broker.embedded import free_port
from lapverse_streams.gateway.bridge import Bridge
from lapverse_streams.gateway.status import StatusMonitor
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.settings import Settings
from lapverse_streams.status import print_status, render

REPORT: dict[str, Any] = {
    "status": "degraded",
    "healthScore": 62,
    "health": {"terms": {"errors": 25, "latency": 0, "alerts": 15, "breakers": 0, "broker": 0}},
    "uptimeS": 3725,
    "broker": {"connected": True},
    "workersLive": 2,
    "alerts": {"source": "prometheus", "firing": [{"alertname": "FromGateway"}]},
    "breakers": {"news_ai": "open"},
    "consumerLag": {"lapverse-tasks": 12},
    "tenants": {
        f"t{i}": {
            "burnRate": float(i),
            "successRatio": 1 - i / 100,
            "sloTarget": 0.99,
            "cost": 1.5,
            "mrr": 1000.0,
        }
        for i in range(7)
    },
}
HISTORY = {"trend": {"samples": 30, "min": 55, "mean": 70.2, "max": 95, "direction": "worsening"}}
FAST_BURN = {"alertname": "LapverseSLOFastBurn", "severity": "page", "tenant": "t6"}
BREAKER = {"alertname": "LapverseBreakerOpen", "severity": "ticket"}
PROMETHEUS_ALERTS = {
    "data": {
        "alerts": [
            {"state": "firing", "labels": FAST_BURN},
            {"state": "pending", "labels": BREAKER},
        ]
    }
}


@pytest.fixture
async def servers() -> AsyncIterator[Settings]:
    """A fake gateway (status and history) and a fake Prometheus (alerts) on free ports."""
    seen: dict[str, str] = {}

    async def status(request: web.Request) -> web.Response:
        seen["authorization"] = request.headers.get("Authorization", "")
        return web.json_response(REPORT)

    async def history(request: web.Request) -> web.Response:
        assert request.query["window"] == "1h"
        return web.json_response(HISTORY)

    async def alerts(request: web.Request) -> web.Response:
        return web.json_response(PROMETHEUS_ALERTS)

    app = web.Application()
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/status/history", history)
    app.router.add_get("/api/v1/alerts", alerts)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield Settings.from_env(
        {
            "LAPVERSE_GATEWAY_PORT": str(port),
            "LAPVERSE_ADMIN_TOKEN": "adm",
            "LAPVERSE_PROMETHEUS_URL": f"http://127.0.0.1:{port}",
        }
    )
    await runner.cleanup()


async def test_prints_every_section_without_colour_when_not_a_terminal(
    servers: Settings,
) -> None:
    out = io.StringIO()
    code = await print_status(servers, out)
    text = out.getvalue()
    assert code == 1  # degraded
    assert "\033[" not in text
    lines = text.splitlines()
    assert lines[0] == "degraded  health score 62/100"
    assert "points lost: errors -25, alerts -15" in text
    assert "last hour: min 55, mean 70, max 95, worsening" in text
    assert "uptime 1h02m" in text
    assert "live workers: 2" in text
    assert "firing alerts: 1" in text
    assert "LapverseSLOFastBurn (page, t6)" in text
    assert "LapverseBreakerOpen" not in text  # pending, not firing
    assert "breaker news_ai" in text
    assert "lag lapverse-tasks" in text
    top = [line.split()[0] for line in lines if line.startswith("  t")]
    assert top == ["t6", "t5", "t4", "t3", "t2"]  # the five highest burn rates, highest first


async def test_an_unreachable_gateway_exits_2() -> None:
    out = io.StringIO()
    settings = Settings.from_env({"LAPVERSE_GATEWAY_PORT": str(free_port())})
    assert await print_status(settings, out) == 2
    assert "gateway unreachable" in out.getvalue()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_without_prometheus_the_gateway_alerts() -> None:
    out = Terminal()
    render(REPORT, HISTORY, None, out, colour=out.isatty())
    text = out.getvalue()
    assert text.startswith("\033[33mdegraded\033[0m")
    assert "firing alerts: 1\n  FromGateway" in text


def test_without_the_admin_token_it_says_how_to_see_tenants() -> None:
    out = io.StringIO()
    public = {k: v for k, v in REPORT.items() if k not in ("tenants", "alerts")}
    render(public, {}, None, out, colour=False)
    assert "firing alerts: unknown (set LAPVERSE_PROMETHEUS_URL)" in out.getvalue()
    assert "set LAPVERSE_ADMIN_TOKEN to see every tenant" in out.getvalue()


async def test_long_history_comes_from_prometheus_and_falls_back_to_the_gateway(
    tmp_path: Path,
) -> None:
    """7d and 30d read the recording rule from Prometheus; without the series, the gateway's."""
    queries: list[str] = []
    series: list[Any] = [{"metric": {}, "values": [[1_800_000_000, "91.5"], [1_800_021_600, "40"]]}]

    async def query_range(request: web.Request) -> web.Response:
        queries.append(request.query["query"])
        return web.json_response({"status": "success", "data": {"result": series}})

    app = web.Application()
    app.router.add_get("/api/v1/query_range", query_range)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        settings = Settings(data_dir=str(tmp_path), prometheus_url=f"http://127.0.0.1:{port}")
        monitor = StatusMonitor(settings, Bridge(settings), Metrics())
        report = await monitor.history_report("30d")
        assert report["source"] == "prometheus"
        assert queries == ["avg_over_time(lapverse:health_score:avg5m[21600s])"]
        assert [s["status"] for s in report["snapshots"]] == ["healthy", "unhealthy"]
        assert report["trend"]["direction"] == "worsening"
        assert (await monitor.history_report("1h"))["source"] == "gateway"  # short: its own
        series.clear()
        assert (await monitor.history_report("7d"))["source"] == "gateway"
    finally:
        await runner.cleanup()
