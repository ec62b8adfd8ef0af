"""A worker SIGKILLed mid-stream and restarted charges every task and round exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from lapverse_streams.domain.batch import REDRIVEN, REPLAYED
from lapverse_streams.domain.pricing import billing_period
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode, envelope, type_name
from lapverse_streams.events.models import CompetitionRequested, TaskRequested
from lapverse_streams.settings import Settings
from lapverse_streams.variants.forecast import demo_input
from tests.conftest import ENGINE, Stack
from tests.integration.helpers import (
    create_tenant,
    distinct,
    drain,
    read_topic,
    settled_ledger,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
TASKS = 600
GUARANTEES = [
    "at_least_once",
    pytest.param(
        "exactly_once",
        marks=pytest.mark.skipif(ENGINE != "kafka", reason="Tansu has no transactions"),
    ),
]


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_sigkill_mid_stream_then_restart_charges_each_task_once(
    stack_factory: Callable[..., Stack], guarantee: str
) -> None:
    stack = stack_factory(LAPVERSE_REDRIVE_AFTER_MS="8000", LAPVERSE_PROCESSING_GUARANTEE=guarantee)
    stack.up()
    asyncio.run(crash_and_recover(stack))
    if guarantee == "exactly_once":
        asyncio.run(each_accepted_once(stack.settings, TASKS))


async def crash_and_recover(stack: Stack) -> None:
    """Produce requests, SIGKILL the worker mid-stream, restart it, check the ledger."""
    settings = stack.settings
    async with aiohttp.ClientSession() as session:  # 600 at once: over the default burst
        await create_tenant(
            session, stack, "crashy", mrr=1_000_000.0, rateLimitPerS=10_000, burst=10_000
        )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        now = int(time.time() * 1000)
        for i in range(TASKS):
            request = TaskRequested(type="NOOP", tenant="crashy", cost_center="ops")
            event = envelope("task.requested", f"crash-{i}", "crashy", request, now, "/svc")
            await producer.send(settings.topic(topics.TASKS), encode(event), key=b"crashy")
            if i == TASKS // 3:
                await producer.flush()
                await read_topic(settings, topics.TASK_DECISIONS, lambda rs: len(rs) >= 20)
                stack.kill("worker")
        # redeliver some requests too, as a retrying producer would
        for i in range(0, TASKS, 7):
            request = TaskRequested(type="NOOP", tenant="crashy", cost_center="ops")
            event = envelope("task.requested", f"crash-{i}", "crashy", request, now, "/svc")
            await producer.send(settings.topic(topics.TASKS), encode(event), key=b"crashy")
        await producer.flush()
    finally:
        await producer.stop()
    stack.start("worker")
    stack.wait_ready("worker")

    try:
        await read_topic(settings, topics.TASK_RESULTS, distinct("taskId", TASKS), timeout_s=60)
    except TimeoutError as timeout:
        decided = {
            orjson.loads(r.value)["data"]["idempotencyKey"]
            for r in await drain(settings, settings.topic(topics.TASK_DECISIONS))
        }
        missing = [k for k in (f"crash-{i}" for i in range(TASKS)) if k not in decided]
        raise AssertionError(
            f"{len(missing)} requests never decided, first {missing[:5]}"
        ) from timeout
    results = await drain(settings, settings.topic(topics.TASK_RESULTS))
    completed = {orjson.loads(r.value)["data"]["taskId"] for r in results}
    assert len(completed) == TASKS

    ledger = await settled_ledger(settings, "crashy")
    assert ledger["reserved"] == {}
    assert ledger["spend"] == {billing_period(int(time.time() * 1000)): {"ops": TASKS * 10_000}}


ROUNDS = 12


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_worker_killed_mid_round_completes_each_round_once_and_charges_it_once(
    stack_factory: Callable[..., Stack], guarantee: str
) -> None:
    stack = stack_factory(
        LAPVERSE_REDRIVE_AFTER_MS="8000",
        LAPVERSE_COMPETITION_DEADLINE_MS="60000",
        LAPVERSE_PROCESSING_GUARANTEE=guarantee,
    )
    stack.up()
    asyncio.run(kill_mid_round(stack))
    if guarantee == "exactly_once":
        asyncio.run(each_accepted_once(stack.settings, ROUNDS))


async def each_accepted_once(settings: Settings, expected: int) -> None:
    """Exactly once: a committed reader sees one acceptance per request, crash or not.

    Under at least once, a worker killed between its output and its offset commit decides
    the batch again on restart, and its acceptances appear twice. Answers to redelivered
    requests (`lapverse-replayed`) and decisions sent again for an overdue result
    (`lapverse-redriven`) are not new acceptances, and are not counted.
    """
    accepted: dict[str, int] = {}
    for record in await drain(settings, settings.topic(topics.TASK_DECISIONS)):
        event = orjson.loads(record.value)
        if event["type"] not in (type_name("task.accepted"), type_name("competition.accepted")):
            continue
        if any(name in (REDRIVEN, REPLAYED) for name, _ in record.headers or ()):
            continue
        key = event["data"]["idempotencyKey"]
        accepted[key] = accepted.get(key, 0) + 1
    assert len(accepted) == expected
    twice = {key: n for key, n in accepted.items() if n > 1}
    assert not twice, f"accepted more than once: {twice}"


async def kill_mid_round(stack: Stack) -> None:
    """Produce rounds, SIGKILL the worker once the first is decided, restart, check each once."""
    settings = stack.settings
    async with aiohttp.ClientSession() as session:
        await create_tenant(session, stack, "rounds", mrr=1_000_000.0)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        now = int(time.time() * 1000)
        for i in range(ROUNDS):
            request = CompetitionRequested(tenant="rounds", input=demo_input())
            event = envelope("competition.requested", f"round-{i}", "rounds", request, now, "/svc")
            await producer.send(settings.topic(topics.SELF_COMPETE), encode(event), key=b"rounds")
        await producer.flush()
    finally:
        await producer.stop()
    await read_topic(settings, topics.TASK_DECISIONS, lambda rs: len(rs) >= 1)
    stack.kill("worker")
    stack.start("worker")
    stack.wait_ready("worker")

    done = distinct("competitionId", ROUNDS)
    await read_topic(settings, topics.COMPETITION_RESULTS, done, timeout_s=90)
    await asyncio.sleep(2)  # a duplicate completion would land by now
    completions = [
        orjson.loads(r.value)["data"]
        for r in await drain(settings, settings.topic(topics.COMPETITION_RESULTS))
    ]
    ids = [c["competitionId"] for c in completions]
    assert len(ids) == len(set(ids)) == ROUNDS
    charged = sum(c["costMicros"] for c in completions)
    ledger = await settled_ledger(settings, "rounds")
    assert ledger["reserved"] == {}
    assert ledger["spend"] == {billing_period(int(time.time() * 1000)): {"default": charged}}
