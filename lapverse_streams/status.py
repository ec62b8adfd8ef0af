"""`lapverse status`: the gateway's health report, readable in a terminal."""

from __future__ import annotations

import aiohttp

from lapverse_streams.settings import Settings

COLOURS = {"healthy": "\033[32m", "degraded": "\033[33m", "unhealthy": "\033[31m"}
RESET = "\033[0m"


async def print_status(settings: Settings) -> int:
    """Print /api/status; exit code 0 healthy, 1 degraded, 2 unhealthy or unreachable."""
    url = f"http://{settings.gateway_host}:{settings.gateway_port}/api/status"
    # the admin token (LAPVERSE_ADMIN_TOKEN) shows every tenant; without it, health only
    headers = {"Authorization": f"Bearer {settings.admin_token}"} if settings.admin_token else {}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers=headers) as response,
        ):
            report = await response.json(content_type=None)
            if response.status != 200:
                print(f"gateway answered {response.status}: {report.get('detail', '')}")
                return 2
    except (aiohttp.ClientError, ValueError) as exc:
        print(f"gateway unreachable at {url}: {exc}")
        return 2
    label = str(report["status"])
    print(f"{COLOURS.get(label, '')}{label}{RESET}  health score {report['healthScore']}/100")
    print(f"broker connected: {report['broker']['connected']}")
    if "tenants" not in report:
        print("  (set LAPVERSE_ADMIN_TOKEN to see every tenant)")
    for tenant_id, t in sorted(report.get("tenants", {}).items()):
        ratio = "n/a" if t["successRatio"] is None else f"{t['successRatio']:.2%}"
        print(
            f"  {tenant_id:<20} success {ratio:>8} (SLO {t['sloTarget']:.2%})  "
            f"cost ${t['cost']:.2f} of MRR ${t['mrr']:.2f}"
        )
    for name, state in sorted(report.get("breakers", {}).items()):
        print(f"  breaker {name:<12} {state}")
    for topic, behind in sorted(report.get("consumerLag", {}).items()):
        print(f"  lag {topic:<40} {behind}")
    return {"healthy": 0, "degraded": 1}.get(label, 2)
