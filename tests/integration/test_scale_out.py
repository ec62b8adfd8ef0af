"""Two workers share the partitions; one is SIGKILLed mid-stream and the other takes over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from lapverse_streams.broker.embedded import free_port
from lapverse_streams.domain.pricing import billing_period
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import TaskRequested
from tests.conftest import ENGINE, Stack
from tests.integration.helpers import ADMIN, create_tenant, distinct, read_topic, settled_ledger

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.skipif(ENGINE != "kafka", reason="scale-out is checked on Apache Kafka"),
]
TENANTS = [f"scale-{i}" for i in range(8)]
TASKS = 400


async def workers(stack: Stack) -> list[dict[str, Any]]:
    """The live workers /api/status lists, from their heartbeats."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.base_url}/api/status", headers=ADMIN) as r,
    ):
        listed: list[dict[str, Any]] = (await r.json()).get("workers", [])
    return [w for w in listed if w["live"]]


async def until_split(stack: Stack, count: int, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Wait until `count` live workers each hold some partitions (fresh heartbeats)."""
    deadline = time.monotonic() + timeout_s
    live: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        live = await workers(stack)
        holding = [w for w in live if w["assignedPartitions"] > 0 and w["lastSeenS"] < 3]
        if len(holding) == count and len(live) == count:
            return live
        await asyncio.sleep(0.5)
    raise TimeoutError(f"partitions never split over {count} workers: {live}")


def test_two_workers_share_the_load_and_one_can_die(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(
        LAPVERSE_TOPIC_PARTITIONS="4",
        LAPVERSE_STANDBY_REPLICAS="1",
        LAPVERSE_REDRIVE_AFTER_MS="8000",
        LAPVERSE_HEARTBEAT_INTERVAL_MS="1000",
        LAPVERSE_WORKER_INSTANCE_ID="worker-1",
    ).up()
    stack.start(
        "worker",
        "worker-2",
        LAPVERSE_WORKER_WEB_PORT=str(free_port()),
        LAPVERSE_WORKER_INSTANCE_ID="worker-2",
    )
    stack.wait_ready("worker-2")
    asyncio.run(share_then_lose_one(stack))


async def share_then_lose_one(stack: Stack) -> None:
    settings = stack.settings
    async with aiohttp.ClientSession() as session:
        for tenant in TENANTS:
            await create_tenant(session, stack, tenant, mrr=1_000_000.0)
    both = await until_split(stack, 2)
    assert sum(w["assignedPartitions"] for w in both) >= 2 * 4  # every partition of each topic
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        now = int(time.time() * 1000)
        for i in range(TASKS):
            tenant = TENANTS[i % len(TENANTS)]
            request = TaskRequested(type="NOOP", tenant=tenant, cost_center="ops")
            event = envelope("task.requested", f"scale-{i}", tenant, request, now, "/svc")
            await producer.send(settings.topic(topics.TASKS), encode(event), key=tenant.encode())
            if i == TASKS // 3:
                await producer.flush()
                await read_topic(settings, topics.TASK_DECISIONS, lambda rs: len(rs) >= 40)
                stack.kill("worker-2")
        await producer.flush()
    finally:
        await producer.stop()

    await read_topic(settings, topics.TASK_RESULTS, distinct("taskId", TASKS), timeout_s=120)
    assert len(await until_split(stack, 1)) == 1  # the survivor holds everything now
    period = billing_period(int(time.time() * 1000))
    for tenant in TENANTS:  # every task completed once and charged once
        ledger = await settled_ledger(settings, tenant)
        assert ledger["reserved"] == {}, tenant
        assert ledger["spend"] == {period: {"ops": TASKS // len(TENANTS) * 10_000}}, tenant
