"""A worker SIGKILLed mid-stream and restarted charges every task and round exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from lapverse_streams.domain.pricing import billing_period
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import CompetitionRequested, TaskRequested
from lapverse_streams.variants.forecast import demo_input
from tests.conftest import Stack
from tests.integration.helpers import create_tenant, drain, ledger_of, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
TASKS = 600


def test_sigkill_mid_stream_then_restart_charges_each_task_once(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(LAPVERSE_REDRIVE_AFTER_MS="8000")
    stack.up()
    asyncio.run(crash_and_recover(stack))


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

    def all_done(records: list[object]) -> bool:
        done = {orjson.loads(r.value)["data"]["taskId"] for r in records}  # type: ignore[attr-defined]
        return len(done) >= TASKS

    try:
        await read_topic(settings, topics.TASK_RESULTS, all_done, timeout_s=60)
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

    deadline = time.monotonic() + 30
    ledger: dict[str, object] = {}
    while time.monotonic() < deadline:
        ledger = await ledger_of(settings, "crashy")
        spend = ledger.get("spend", {})
        if isinstance(spend, dict) and spend and not ledger["reserved"]:
            break
        await asyncio.sleep(0.5)
    assert ledger["reserved"] == {}
    assert ledger["spend"] == {billing_period(int(time.time() * 1000)): {"ops": TASKS * 10_000}}


ROUNDS = 12


def test_worker_killed_mid_round_completes_each_round_once_and_charges_it_once(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(
        LAPVERSE_REDRIVE_AFTER_MS="8000", LAPVERSE_COMPETITION_DEADLINE_MS="60000"
    )
    stack.up()
    asyncio.run(kill_mid_round(stack))


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

    def all_completed(records: list[object]) -> bool:
        ids = {orjson.loads(r.value)["data"]["competitionId"] for r in records}  # type: ignore[attr-defined]
        return len(ids) >= ROUNDS

    await read_topic(settings, topics.COMPETITION_RESULTS, all_completed, timeout_s=90)
    await asyncio.sleep(2)  # a duplicate completion would land by now
    completions = [
        orjson.loads(r.value)["data"]
        for r in await drain(settings, settings.topic(topics.COMPETITION_RESULTS))
    ]
    ids = [c["competitionId"] for c in completions]
    assert len(ids) == len(set(ids)) == ROUNDS
    charged = sum(c["costMicros"] for c in completions)
    deadline = time.monotonic() + 30
    ledger: dict[str, object] = {}
    while time.monotonic() < deadline:
        ledger = await ledger_of(settings, "rounds")
        if ledger.get("spend") and not ledger["reserved"]:
            break
        await asyncio.sleep(0.5)
    assert ledger["reserved"] == {}
    assert ledger["spend"] == {billing_period(int(time.time() * 1000)): {"default": charged}}
