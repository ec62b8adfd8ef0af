"""A real Prometheus server scrapes the gateway and the worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from lapverse_streams.broker.embedded import free_port
from tests.conftest import Stack
from tests.integration.helpers import create_tenant, post_task, prometheus_server, task_body

pytestmark = pytest.mark.kafka


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[int]:
    """A Prometheus server scraping the stack every second; yields its port."""
    settings = stack.settings
    targets = [f"127.0.0.1:{settings.gateway_port}", f"127.0.0.1:{settings.worker_web_port}"]
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "lapverse", "static_configs": [{"targets": targets}]}],
    }
    port = free_port()
    with prometheus_server(tmp_path, config, port):
        yield port


async def test_real_prometheus_scrapes_gateway_and_worker(stack: Stack, prometheus: int) -> None:
    api = f"http://127.0.0.1:{prometheus}/api/v1"
    async with aiohttp.ClientSession() as session:
        key = await create_tenant(session, stack, "scraped")
        assert (await post_task(session, stack, key, "scraped", task_body("scraped")))[0] == 202
        query = 'sum by (job) (lapverse_tasks_total{tenant="scraped"})'
        deadline = time.monotonic() + 60
        result: list[object] = []
        while not result and time.monotonic() < deadline:
            await asyncio.sleep(1)
            try:
                async with session.get(f"{api}/query", params={"query": query}) as r:
                    result = (await r.json())["data"]["result"] if r.status == 200 else []
            except aiohttp.ClientError:
                continue
        assert result, "Prometheus never saw lapverse_tasks_total"
        health: list[str] = []
        while health != ["up", "up"] and time.monotonic() < deadline:  # both scraped at least once
            async with session.get(f"{api}/targets") as r:
                health = sorted(t["health"] for t in (await r.json())["data"]["activeTargets"])
            await asyncio.sleep(0.5)
        assert health == ["up", "up"]
