"""Exactly once on Apache Kafka: a fenced worker stops, and nothing it did is seen twice.

The SIGKILL drills of `test_crash.py` run in both modes. This drill is the other half of
the transaction argument: a worker whose transactional producer is fenced (as when its
partitions went to another worker while it was paused) must not go on with tables that are
ahead of the log. It stops; its restart rebuilds the tables from what was committed.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from lapverse_streams.domain.pricing import billing_period
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import TaskRequested
from tests.conftest import ENGINE, Stack
from tests.integration.helpers import create_tenant, distinct, read_topic, settled_ledger
from tests.integration.test_crash import each_accepted_once

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.skipif(ENGINE != "kafka", reason="Tansu has no transactions"),
]
TASKS = 200


def test_a_fenced_worker_stops_and_its_restart_charges_each_task_once(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(LAPVERSE_PROCESSING_GUARANTEE="exactly_once")
    stack.up()
    asyncio.run(fence_then_recover(stack))


async def fence_then_recover(stack: Stack) -> None:
    settings = stack.settings
    async with aiohttp.ClientSession() as session:
        await create_tenant(session, stack, "fenced", mrr=1_000_000.0, rateLimitPerS=10_000)
    await send_tasks(stack, range(TASKS // 2))
    await read_topic(settings, topics.TASK_RESULTS, lambda rs: len(rs) >= TASKS // 2)

    # A producer with the governor's transactional ids takes them over, as a new owner would.
    group = f"{settings.topic_prefix}{settings.app_id}"
    usurpers = [
        AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            transactional_id=f"{group}-governor-{p}",
        )
        for p in range(settings.topic_partitions)
    ]
    for usurper in usurpers:
        await usurper.start()
    for usurper in usurpers:
        await usurper.stop()

    await send_tasks(stack, range(TASKS // 2, TASKS))
    worker = stack.processes.pop("worker")
    try:
        code = await asyncio.to_thread(worker.wait, 60)
    except subprocess.TimeoutExpired:
        worker.kill()
        tail = (stack.logs / "worker.log").read_text().splitlines()[-12:]
        raise AssertionError("a fenced worker went on:\n" + "\n".join(tail)) from None
    assert code != 0

    stack.start("worker")
    stack.wait_ready("worker")

    await read_topic(settings, topics.TASK_RESULTS, distinct("taskId", TASKS), timeout_s=60)
    await each_accepted_once(settings, TASKS)
    ledger = await settled_ledger(settings, "fenced")
    assert ledger["reserved"] == {}
    assert ledger["spend"] == {billing_period(int(time.time() * 1000)): {"ops": TASKS * 10_000}}


async def send_tasks(stack: Stack, numbers: range) -> None:
    settings = stack.settings
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        now = int(time.time() * 1000)
        for i in numbers:
            request = TaskRequested(type="NOOP", tenant="fenced", cost_center="ops")
            event = envelope("task.requested", f"fenced-{i}", "fenced", request, now, "/svc")
            await producer.send(settings.topic(topics.TASKS), encode(event), key=b"fenced")
        await producer.flush()
    finally:
        await producer.stop()
