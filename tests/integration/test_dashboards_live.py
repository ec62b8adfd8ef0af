"""Every dashboard target has data in a real Prometheus after a realistic mixed workload.

A worker and a gateway run; Prometheus scrapes both every second (as the compose file's jobs
lapverse-worker and lapverse-gateway) and evaluates the recording and alerting rules. For
about 45 s several tenants send tasks, replays, refused and failing tasks and self-compete
rounds (enough for a champion to be promoted, then rolled back by an operator) while News AI
goes down and comes back. Then
every metric name a dashboard selects must be one the processes emit (read from their
/metrics, not from a list) and every panel target and variable query must return data.
Run with -s to see the table of targets.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lapverse_streams.broker.embedded import free_port, stop_process
from lapverse_streams.standins.process import spawn_standin
from lapverse_streams.variants.forecast import demo_input
from tests import dashboards
from tests.conftest import Stack
from tests.integration.helpers import (
    ADMIN,
    create_tenant,
    post_task,
    prometheus_server,
    start_round,
    task_body,
    wait_round_completed,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WORKLOAD_S = 45
SETTLE_S = 6  # the workers refresh their state gauges every 5 s; Prometheus scrapes every 1 s
PROMOTION_ROUNDS = 32  # the promotion policy wants 30 rounds before it promotes a champion
# Targets that have data only while an alert fires; nothing else may be empty.
NEEDS_FIRING_ALERTS = frozenset({'count by (alertname, severity) (ALERTS{alertstate="firing"})'})
ROUND = {"content": "Monthly airline passengers", "platforms": ["twitter"], "input": demo_input()}


@dataclass(frozen=True)
class Check:
    """One dashboard query and what Prometheus answered."""

    dashboard: str
    panel: str
    ref: str
    query: str
    verdict: str
    ok: bool


@pytest.fixture(scope="module")
def news_ai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A News AI stand-in of this module's own, so its outage touches no other test."""
    port = free_port()
    process = spawn_standin(
        "news-ai", "127.0.0.1", port, tmp_path_factory.mktemp("news") / "news-ai.log"
    )
    yield f"http://127.0.0.1:{port}"
    stop_process(process)


@pytest.fixture(scope="module")
def prometheus_port() -> int:
    """Prometheus's port, known before the stack starts so the gateway can be told it."""
    return free_port()


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., Stack], news_ai: str, prometheus_port: int) -> Stack:
    """A stack whose News AI breaker opens after 3 failures and whose gateway asks Prometheus
    for firing alerts."""
    return stack_factory(
        LAPVERSE_NEWS_AI_URL=news_ai,
        LAPVERSE_NEWS_AI_FAILURE_THRESHOLD="3",
        LAPVERSE_BREAKER_RESET_TIMEOUT_MS="5000",
        LAPVERSE_HEARTBEAT_INTERVAL_MS="500",
        LAPVERSE_HEALTH_INTERVAL_S="1",
        LAPVERSE_PROMETHEUS_URL=f"http://127.0.0.1:{prometheus_port}",
    ).up()


@pytest.fixture(scope="module")
def prometheus(
    stack: Stack, prometheus_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Prometheus scraping the stack every second with the project's rules; yields its API."""
    home = tmp_path_factory.mktemp("prometheus")
    settings = stack.settings
    jobs = {"lapverse-gateway": settings.gateway_port, "lapverse-worker": settings.worker_web_port}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in dashboards.RULE_FILES],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in jobs.items()
        ],
    }
    with prometheus_server(home, config, prometheus_port):
        yield f"http://127.0.0.1:{prometheus_port}/api/v1"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def prometheus_get(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    """The `data` of a Prometheus API answer; raises with Prometheus's error otherwise."""
    async with session.get(url, params=params) as r:
        body = await r.json(content_type=None)
    if body.get("status") != "success":
        raise ValueError(body.get("error", body))
    return body["data"]


async def wait_scraping(session: aiohttp.ClientSession, api: str, timeout_s: float = 60) -> None:
    """Until Prometheus is up and has scraped both processes at least once."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            targets = (await prometheus_get(session, f"{api}/targets"))["activeTargets"]
            if sorted(t["health"] for t in targets) == ["up", "up"]:
                return
        except (aiohttp.ClientError, ValueError):
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError("Prometheus never scraped the gateway and the worker")


# ---------------------------------------------------------------- the workload


async def set_faults(session: aiohttp.ClientSession, url: str, failure_rate: float) -> None:
    """PUT a stand-in's failure rate."""
    async with session.put(f"{url}/control", json={"failureRate": failure_rate}) as r:
        assert r.status == 200, await r.text()


async def steady_tasks(
    session: aiohttp.ClientSession,
    stack: Stack,
    key: str,
    tenant: str,
    until: float,
    seen: Counter[str],
) -> None:
    """ANALYSIS and NOOP tasks for two cost centers; every fourth request is a replay."""
    last: tuple[str, dict[str, Any]] | None = None
    i = 0
    while time.monotonic() < until:
        i += 1
        if last is not None and i % 4 == 0:
            idempotency_key, body = last
            kind = "replay"
        else:
            kind = "NOOP" if i % 3 == 0 else "ANALYSIS"
            cost_center = ("marketing", "research")[i % 2]
            body = task_body(tenant, type=kind, costCenter=cost_center)
            idempotency_key = uuid.uuid4().hex
            last = (idempotency_key, body)
        status, _, _ = await post_task(session, stack, key, tenant, body, idempotency_key)
        seen[f"{tenant} {kind} {status}"] += 1
        await asyncio.sleep(0.3)


async def failing_tasks(
    session: aiohttp.ClientSession,
    stack: Stack,
    key: str,
    tenant: str,
    until: float,
    seen: Counter[str],
) -> None:
    """CHAOS tasks that always fail (dead letters), until the error budget refuses them (503)."""
    while time.monotonic() < until:
        body = task_body(tenant, type="CHAOS")
        status, _, _ = await post_task(session, stack, key, tenant, body)
        seen[f"{tenant} CHAOS {status}"] += 1
        await asyncio.sleep(0.5)


async def rounds(
    session: aiohttp.ClientSession,
    stack: Stack,
    key: str,
    tenant: str,
    at_once: int,
    until: float,
    seen: Counter[str],
) -> None:
    """`at_once` rounds four at a time, then one round at a time until `until`."""
    parallel = asyncio.Semaphore(4)

    async def one() -> None:
        async with parallel:
            round_id = await start_round(session, stack, key, tenant, ROUND)
            await wait_round_completed(session, stack, key, tenant, round_id, timeout_s=90)
            seen[f"{tenant} round completed"] += 1

    await asyncio.gather(*(one() for _ in range(at_once)))
    while time.monotonic() < until:
        await one()
        await asyncio.sleep(1)


async def refusals(
    session: aiohttp.ClientSession, stack: Stack, keys: dict[str, str], seen: Counter[str]
) -> None:
    """Refused for margin (402), for a disabled task type (404) and for the rate limit (429)."""
    for _ in range(3):  # tiny's MRR covers its first task only
        status, _, _ = await post_task(session, stack, keys["tiny"], "tiny", task_body("tiny"))
        seen[f"tiny ANALYSIS {status}"] += 1
    flag = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "on",
        "targeting": {"if": [{"==": [{"var": "tenantId"}, "flagged"]}, "off", "on"]},
    }
    url = f"{stack.base_url}/admin/v1/flags/task-type.ANALYSIS"
    async with session.put(url, json=flag, headers=ADMIN) as r:
        assert r.status == 200, await r.text()
    deadline = time.monotonic() + 15
    status = 0
    while status != 404 and time.monotonic() < deadline:  # the worker reads flags async
        status, _, _ = await post_task(
            session, stack, keys["flagged"], "flagged", task_body("flagged")
        )
        seen[f"flagged ANALYSIS {status}"] += 1
        await asyncio.sleep(0.2)
    body = task_body("flagged", type="NOOP")
    status, _, _ = await post_task(session, stack, keys["flagged"], "flagged", body)
    seen[f"flagged NOOP {status}"] += 1
    burst = [
        post_task(session, stack, keys["limited"], "limited", task_body("limited", type="NOOP"))
        for _ in range(6)
    ]
    for status, _, _ in await asyncio.gather(*burst):
        seen[f"limited NOOP {status}"] += 1


async def champion_rollback(
    session: aiohttp.ClientSession, stack: Stack, key: str, until: float, seen: Counter[str]
) -> None:
    """Once arena's champion is promoted, an operator rolls it back (a rollback by reason)."""
    headers = {"Authorization": f"Bearer {key}", "X-Tenant-ID": "arena"}
    while time.monotonic() < until:
        async with session.get(f"{stack.base_url}/api/v2/champions/forecast", headers=headers) as r:
            if r.status == 200:
                break
        await asyncio.sleep(1)
    url = f"{stack.base_url}/admin/v1/tenants/arena/champions/forecast/rollback"
    body = {"actor": "dashboards-test", "reason": "a rollback for the rollbacks panel"}
    async with session.post(url, json=body, headers=ADMIN) as r:
        seen[f"arena rollback {r.status}"] += 1


async def news_ai_outage(session: aiohttp.ClientSession, news_ai: str, seen: Counter[str]) -> None:
    """News AI fails every call from 10 s to 22 s: its breaker opens, then closes again."""
    await asyncio.sleep(10)
    await set_faults(session, news_ai, 1.0)
    seen["news-ai outage"] += 1
    try:
        await asyncio.sleep(12)
    finally:
        await set_faults(session, news_ai, 0.0)


async def run_workload(session: aiohttp.ClientSession, stack: Stack, news_ai: str) -> Counter[str]:
    """The mixed workload; returns how many requests of each kind got which status."""
    tenants: dict[str, dict[str, Any]] = {
        "retail": {},
        "media": {},
        "arena": {},
        "flaky": {"sloTarget": 0.9},
        "tiny": {"mrr": 0.02},
        "flagged": {},
        "limited": {"rateLimitPerS": 0.5, "burst": 2},
    }
    created = await asyncio.gather(
        *(create_tenant(session, stack, tenant, **body) for tenant, body in tenants.items())
    )
    keys = dict(zip(tenants, created, strict=True))
    seen: Counter[str] = Counter()
    until = time.monotonic() + WORKLOAD_S
    await asyncio.gather(
        rounds(session, stack, keys["arena"], "arena", PROMOTION_ROUNDS, until, seen),
        champion_rollback(session, stack, keys["arena"], until, seen),
        rounds(session, stack, keys["media"], "media", 2, until, seen),
        steady_tasks(session, stack, keys["retail"], "retail", until, seen),
        steady_tasks(session, stack, keys["media"], "media", until, seen),
        failing_tasks(session, stack, keys["flaky"], "flaky", until, seen),
        refusals(session, stack, keys, seen),
        news_ai_outage(session, news_ai, seen),
    )
    return seen


# ---------------------------------------------------------------- the checks


async def emitted_series(session: aiohttp.ClientSession, stack: Stack) -> set[str]:
    """Every series name the stack's processes expose on /metrics right now."""
    names: set[str] = set()
    for port in stack.ports.values():
        async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
        for family in text_string_to_metric_families(text):
            names.update(sample.name for sample in family.samples)
    return names


def verdict_of(result: list[dict[str, Any]]) -> tuple[str, bool]:
    """What an instant query returned: data only when some value is a number."""
    if not result:
        return "EMPTY", False
    values = [float(series["value"][1]) for series in result]
    if all(math.isnan(value) for value in values):
        return "NaN only", False
    return f"data ({len(result)} series)", True


async def check_target(
    session: aiohttp.ClientSession, api: str, target: dashboards.Target, known: set[str]
) -> Check:
    """Run one panel target through Prometheus."""

    def done(verdict: str, ok: bool, query: str = target.expr) -> Check:
        return Check(target.dashboard, target.panel, target.ref_id, query, verdict, ok)

    path = dashboards.DASHBOARD_DIR / f"{target.dashboard}.json"
    try:
        query = dashboards.as_promql(target.expr, dashboards.all_values(path))
    except KeyError as exc:
        return done(f"UNRESOLVED {exc}", False)
    unknown = sorted(dashboards.metric_names(query) - known)
    if unknown:
        return done(f"UNKNOWN NAMES {', '.join(unknown)}", False, query)
    try:
        result = (await prometheus_get(session, f"{api}/query", query=query))["result"]
    except ValueError as exc:
        return done(f"ERROR {exc}", False, query)
    verdict, ok = verdict_of(result)
    if not ok and target.expr in NEEDS_FIRING_ALERTS:
        return done(f"{verdict} (allowed: needs a firing alert)", True, query)
    return done(verdict, ok, query)


async def check_variable(
    session: aiohttp.ClientSession, api: str, variable: dashboards.VariableQuery, known: set[str]
) -> Check:
    """Run one variable query (label_values) through Prometheus's label API."""

    def done(verdict: str, ok: bool) -> Check:
        return Check(variable.dashboard, f"${variable.name}", "var", variable.query, verdict, ok)

    parsed = dashboards.label_values(variable.query)
    if parsed is None:
        return done("UNSUPPORTED variable query", False)
    selector, label = parsed
    unknown = sorted(dashboards.metric_names(selector or "") - known)
    if unknown:
        return done(f"UNKNOWN NAMES {', '.join(unknown)}", False)
    params = {"match[]": selector} if selector else {}
    values = await prometheus_get(session, f"{api}/label/{label}/values", **params)
    return done(f"data ({len(values)} values)" if values else "EMPTY", bool(values))


def table(checks: list[Check], seen: Counter[str]) -> str:
    """The checks as a table, failures first, with a summary line and the workload."""
    rows = sorted(checks, key=lambda c: (c.ok, c.dashboard, c.panel, c.ref))
    width = max(len(c.verdict) for c in rows)
    panel_width = max(len(f"{c.dashboard} / {c.panel}") for c in rows)
    lines = [
        f"{c.verdict:<{width}}  {f'{c.dashboard} / {c.panel}':<{panel_width}}  {c.ref:<3}  "
        f"{c.query}"
        for c in rows
    ]
    counts = Counter(
        "with data" if c.ok else "unknown names" if c.verdict.startswith("UNKNOWN") else "empty"
        for c in checks
    )
    summary = (
        f"{len(checks)} dashboard queries: {counts['with data']} with data, "
        f"{counts['empty']} empty or failing, {counts['unknown names']} with unknown names"
    )
    workload = ", ".join(f"{kind}: {n}" for kind, n in sorted(seen.items()))
    return "\n".join([summary, *lines, f"workload: {workload}"])


async def test_every_dashboard_target_has_data_after_a_mixed_workload(
    session: aiohttp.ClientSession, stack: Stack, prometheus: str, news_ai: str
) -> None:
    await wait_scraping(session, prometheus)
    seen = await run_workload(session, stack, news_ai)
    await asyncio.sleep(SETTLE_S)

    emitted = await emitted_series(session, stack)
    known = emitted | dashboards.recorded_names() | dashboards.PROMETHEUS_SERIES
    checks = [
        await check_target(session, prometheus, target, known)
        for path in dashboards.DASHBOARDS
        for target in dashboards.targets(path)
    ]
    checks += [
        await check_variable(session, prometheus, variable, known)
        for path in dashboards.DASHBOARDS
        for variable in dashboards.variable_queries(path)
    ]
    report = table(checks, seen)
    print(f"\n{report}")

    exprs = {target.expr for path in dashboards.DASHBOARDS for target in dashboards.targets(path)}
    assert exprs >= NEEDS_FIRING_ALERTS, "an allowed-empty target is in no dashboard any more"
    assert all(dashboards.metric_names(e) == {"ALERTS"} for e in NEEDS_FIRING_ALERTS)
    assert all(check.ok for check in checks), report
