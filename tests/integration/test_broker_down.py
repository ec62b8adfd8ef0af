"""With the broker gone the gateway answers 503 + Retry-After, never 202."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from lapverse_streams.broker.embedded import free_port
from lapverse_streams.broker.engines import Broker, embedded_broker
from lapverse_streams.broker.topics import ensure_topics
from lapverse_streams.settings import Settings
from tests.conftest import ADMIN_TOKEN, ENGINE

pytestmark = pytest.mark.kafka


def test_broker_down_answers_503_and_never_202(tmp_path: Path) -> None:
    broker = embedded_broker(ENGINE, free_port(), log_path=tmp_path / f"{ENGINE}.log")
    broker.start()
    port = free_port()
    env = {**os.environ, "LAPVERSE_BROKER_URL": broker.url, "LAPVERSE_GATEWAY_PORT": str(port),
           "LAPVERSE_ADMIN_TOKEN": ADMIN_TOKEN, "LAPVERSE_DECISION_TIMEOUT_MS": "500"}  # fmt: skip
    asyncio.run(ensure_topics(Settings(broker_url=broker.url)))
    with (tmp_path / "gateway.log").open("ab") as out:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "lapverse_streams.cli", "gateway"],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        asyncio.run(post_after_broker_dies(base, broker))
    finally:
        gateway.terminate()
        gateway.wait(20)
        broker.stop()


async def post_after_broker_dies(base: str, broker: Broker) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.put(
            f"{base}/admin/v1/tenants/down", json={"mrr": 10.0}, headers=admin
        ) as r:
            assert r.status == 201
        async with session.post(f"{base}/admin/v1/tenants/down/api-keys", headers=admin) as r:
            key = (await r.json())["apiKey"]
        broker.stop()
        headers = {"Authorization": f"Bearer {key}", "X-Tenant-ID": "down", "Idempotency-Key": "k1"}
        body = {"type": "ANALYSIS", "tenant": "down"}
        async with session.post(f"{base}/api/v2/tasks", json=body, headers=headers) as r:
            assert r.status == 503, await r.text()
            assert r.headers["Retry-After"] == "5"
            assert r.content_type == "application/problem+json"
        async with session.get(f"{base}/readyz") as r:
            assert r.status == 503
