"""External failures while tasks flow: News AI's breaker round trip, and retried handlers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from lapverse_streams.broker.embedded import free_port, stop_process
from lapverse_streams.standins.process import spawn_standin
from tests.conftest import Stack
from tests.integration.helpers import create_tenant, ledger_of, post_task, task_body, wait_task

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def news_ai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A News AI stand-in of this module's own, so its faults touch no other test."""
    port = free_port()
    process = spawn_standin(
        "news-ai", "127.0.0.1", port, Path(tmp_path_factory.mktemp("news")) / "news-ai.log"
    )
    yield f"http://127.0.0.1:{port}"
    stop_process(process)


@pytest.fixture(scope="module")
def moody(stack_factory: Callable[..., Stack], news_ai: str) -> Stack:
    """A stack whose News AI breaker opens after 3 failures and retries after 5 s."""
    stack = stack_factory(
        LAPVERSE_NEWS_AI_URL=news_ai,
        LAPVERSE_NEWS_AI_FAILURE_THRESHOLD="3",
        LAPVERSE_BREAKER_RESET_TIMEOUT_MS="5000",
        LAPVERSE_HEARTBEAT_INTERVAL_MS="500",
    )
    stack.up()
    return stack


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def control(session: aiohttp.ClientSession, url: str, **faults: float) -> dict[str, Any]:
    """PUT the stand-in's faults (or GET them when none are given)."""
    method = session.put if faults else session.get
    async with method(f"{url}/control", json=faults or None) as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


async def worker_metric(session: aiohttp.ClientSession, stack: Stack, pattern: str) -> float:
    """The value of the first worker metric line matching `pattern` (0 when absent)."""
    async with session.get(f"http://127.0.0.1:{stack.settings.worker_web_port}/metrics") as r:
        text = await r.text()
    match = re.search(rf"^{pattern} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def reported_breaker(session: aiohttp.ClientSession, stack: Stack, state: str) -> bool:
    """True once GET /api/status reports the News AI breaker in `state` (workers' heartbeats)."""
    for _ in range(40):
        async with session.get(f"{stack.base_url}/api/status") as r:
            report = await r.json()
        if report["breakers"].get("news_ai") == state:
            assert report["consumerLag"] is not None
            return True
        await asyncio.sleep(0.1)
    return False


async def public_status(session: aiohttp.ClientSession, stack: Stack) -> dict[str, Any]:
    """GET /api/status without credentials."""
    async with session.get(f"{stack.base_url}/api/status") as r:
        assert r.status == 200
        report: dict[str, Any] = await r.json()
        return report


async def metric_lines(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(f"{url}/metrics") as r:
        return await r.text()


async def test_each_process_emits_its_state_and_process_gauges(
    session: aiohttp.ClientSession, moody: Stack
) -> None:
    stack = moody
    api_key = await create_tenant(session, stack, "gauged", mrr=2500.0)
    body = task_body("gauged", type="NOOP")  # no News AI call: the breaker test counts them
    status, _, raw = await post_task(session, stack, api_key, "gauged", body)
    assert status == 202, raw
    await wait_task(session, stack, api_key, "gauged", orjson.loads(raw)["taskId"])
    worker_url = f"http://127.0.0.1:{stack.settings.worker_web_port}"
    spend = 'lapverse_spend_usd{cost_center="marketing",tenant="gauged"}'
    for _ in range(100):  # the worker refreshes these every 5 s
        if await worker_metric(session, stack, spend) > 0:
            break
        await asyncio.sleep(0.2)
    assert await worker_metric(session, stack, spend) == 0.01
    assert await worker_metric(session, stack, 'lapverse_mrr_usd{tenant="gauged"}') == 2500.0
    assert await worker_metric(session, stack, 'lapverse_reserved_usd{tenant="gauged"}') == 0.0
    remaining = 'lapverse_budget_remaining_ratio{tenant="gauged"}'
    assert await worker_metric(session, stack, remaining) == 1.0
    worker = await metric_lines(session, worker_url)
    assert 'lapverse_budget_burn_rate{tenant="gauged",window="1h"} 0.0' in worker
    gateway = await metric_lines(session, stack.base_url)
    for text in (worker, gateway):
        assert re.search(r"^process_resident_memory_bytes [0-9.e+]+$", text, re.MULTILINE)
        assert re.search(r"^python_gc_collections_total\{", text, re.MULTILINE)
        assert "lapverse_broker_connected 1.0" in text
    assert re.search(r"^lapverse_health_score [0-9.]+$", gateway, re.MULTILINE)
    assert re.search(r"^lapverse_workers_live [1-9]", gateway, re.MULTILINE)


async def sentiment_of_new_task(
    session: aiohttp.ClientSession, stack: Stack, api_key: str
) -> dict[str, Any]:
    """Run one ANALYSIS task to completion and return its sentiment."""
    status, _, raw = await post_task(session, stack, api_key, "moody", task_body("moody"))
    assert status == 202, raw
    task = await wait_task(session, stack, api_key, "moody", orjson.loads(raw)["taskId"])
    assert task["status"] == "completed", task
    assert task["cost"] == 0.01
    sentiment: dict[str, Any] = task["result"]["sentiment"]
    return sentiment


async def test_news_ai_breaker_opens_serves_labelled_fallbacks_and_closes_again(
    session: aiohttp.ClientSession, moody: Stack, news_ai: str
) -> None:
    stack = moody
    api_key = await create_tenant(session, stack, "moody")
    state = 'lapverse_breaker_state{breaker="news_ai"}'

    healthy = await sentiment_of_new_task(session, stack, api_key)
    assert (healthy["source"], healthy["fallback"]) == ("news-ai", False)
    assert await worker_metric(session, stack, state) == 0

    await control(session, news_ai, failureRate=1.0)
    for _ in range(5):
        fallback = await sentiment_of_new_task(session, stack, api_key)
        assert fallback == {
            "label": "neutral",
            "score": 0.0,
            "confidence": 0.5,
            "source": "fallback",
            "fallback": True,
        }
    assert await worker_metric(session, stack, state) == 2  # open after 3 failures
    seen = (await control(session, news_ai))["requests"]
    await sentiment_of_new_task(session, stack, api_key)
    assert (await control(session, news_ai))["requests"] == seen  # open: not called at all
    assert await reported_breaker(session, stack, "open")
    during = await public_status(session, stack)
    assert during["health"]["terms"]["breakers"] == 25  # one open breaker
    assert (during["healthScore"], during["status"]) == (75, "degraded"), during
    calls = 'lapverse_service_calls_total{outcome="%s",service="news_ai"}'
    assert await worker_metric(session, stack, calls % "fallback") == 3
    assert await worker_metric(session, stack, calls % "rejected") >= 3
    assert await worker_metric(session, stack, calls % "success") == 1

    await control(session, news_ai, failureRate=0.0)
    await asyncio.sleep(5.1)  # the reset timeout: the next call is the half-open trial
    recovered = await sentiment_of_new_task(session, stack, api_key)
    assert (recovered["source"], recovered["fallback"]) == ("news-ai", False)
    assert await worker_metric(session, stack, state) == 0
    assert await reported_breaker(session, stack, "closed")
    after = await public_status(session, stack)
    assert (after["healthScore"], after["status"]) == (100, "healthy"), after
    async with session.get(f"{stack.base_url}/api/status/history?window=1h") as r:
        history = await r.json()
    assert r.status == 200
    assert history["trend"]["samples"] >= 1
    assert history["snapshots"][-1]["status"] in ("healthy", "degraded")
    transitions = 'lapverse_breaker_transitions_total{breaker="news_ai",state="%s"}'
    for entered in ("open", "half_open", "closed"):
        assert await worker_metric(session, stack, transitions % entered) == 1


@pytest.fixture(scope="module")
def patient(stack_factory: Callable[..., Stack]) -> Stack:
    """A stack with the production retry backoff (1 s base, doubling, jitter)."""
    stack = stack_factory(LAPVERSE_RETRY_BASE_MS="1000")
    stack.up()
    return stack


async def test_task_failing_twice_then_succeeding_is_charged_once_without_blocking_others(
    session: aiohttp.ClientSession, patient: Stack
) -> None:
    api_key = await create_tenant(session, patient, "flaky")
    chaos = task_body("flaky", type="CHAOS", costCenter="ops", requirements={"failAttempts": 2})
    status, _, raw = await post_task(session, patient, api_key, "flaky", chaos)
    assert status == 202, raw
    chaos_id = orjson.loads(raw)["taskId"]
    # posted after the flaky one, to the same tenant (so the same partition): done first
    status, _, raw = await post_task(
        session, patient, api_key, "flaky", task_body("flaky", type="NOOP", costCenter="ops")
    )
    noop = await wait_task(session, patient, api_key, "flaky", orjson.loads(raw)["taskId"])
    pending = await session.get(
        f"{patient.base_url}/api/v2/tasks/{chaos_id}",
        headers={"Authorization": f"Bearer {api_key}", "X-Tenant-ID": "flaky"},
    )
    assert (await pending.json())["status"] == "running"  # still retrying its backoff
    pending.release()
    assert noop["status"] == "completed"
    done = await wait_task(session, patient, api_key, "flaky", chaos_id)
    assert done["status"] == "completed"
    assert done["result"] == {"chaos": "survived", "failedAttempts": 2}
    assert done["cost"] == 0.01
    deadline = asyncio.get_running_loop().time() + 20
    ledger: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        ledger = await ledger_of(patient.settings, "flaky")
        if ledger.get("spend") and not ledger["reserved"]:
            break
        await asyncio.sleep(0.3)
    assert ledger["reserved"] == {}
    assert list(ledger["spend"].values()) == [{"ops": 20_000}]  # two tasks, each charged once
