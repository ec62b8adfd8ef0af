"""Hostile records produced straight to the topics, against a real broker and worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from lapverse_streams.domain import idempotency
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode, envelope, header
from lapverse_streams.events.models import FinOpsTags, TaskRequested, TenantConfig
from lapverse_streams.settings import Settings
from tests.conftest import Stack
from tests.hostile import nest_deeply
from tests.integration.helpers import create_tenant, ledger_of, read_topic

pytestmark = pytest.mark.kafka
TENANTS = ("kafka-a", "kafka-b", "kafka-c")


@pytest.fixture
async def producer(stack: Stack) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(bootstrap_servers=stack.settings.bootstrap_servers)
    await client.start()
    yield client
    await client.stop()


def request(tenant: str, key: str, **fields: Any) -> bytes:
    data = TaskRequested(**{"type": "NOOP", "tenant": tenant, **fields})
    return encode(envelope("task.requested", key, tenant, data, int(time.time() * 1000), "/svc"))


def deep(tenant: str, key: str, depth: int = 251) -> bytes:
    """A 1.5 KB task.requested whose requirements nest `depth` levels, as an attacker sends it."""
    value = orjson.loads(request(tenant, key))
    value["data"]["requirements"] = {"complexity": "simple", "x": []}
    return nest_deeply(value, depth)


async def send(producer: AIOKafkaProducer, settings: Settings, key: str, value: bytes) -> None:
    await producer.send(settings.topic(topics.TASKS), value, key=key.encode())


def decided(records: list[Any], task_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Task id -> first decision data, for the ids asked about."""
    found: dict[str, dict[str, Any]] = {}
    for r in records:
        data = orjson.loads(r.value).get("data", {})
        if data.get("taskId") in task_ids:
            found.setdefault(data["taskId"], data | {"_headers": list(r.headers)})
    return found


def dead_letter(records: list[Any], reason: str) -> list[Any]:
    return [r for r in records if header(list(r.headers), "lapverse-dlq-reason") == reason]


async def test_one_poisoned_record_among_sixty_costs_nobody_anything(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    settings = stack.settings
    async with aiohttp.ClientSession() as session:
        for tenant in TENANTS:
            await create_tenant(session, stack, tenant)
    keys = [(TENANTS[i % 3], f"bulk-{i}") for i in range(60)]
    for i, (tenant, key) in enumerate(keys):
        if i == 30:
            await send(producer, settings, "kafka-a", deep("kafka-a", "poisoned"))
        await send(producer, settings, tenant, request(tenant, key))
    await producer.flush()
    ids = {idempotency.task_id(t, k) for t, k in keys}
    records = await read_topic(
        settings, topics.TASK_DECISIONS, lambda rs: len(decided(rs, ids)) == 60, timeout_s=60
    )
    assert {d["status"] for d in decided(records, ids).values()} == {"accepted"}
    dead = await read_topic(settings, topics.DLQ, lambda rs: bool(dead_letter(rs, "too_deep")))
    [letter] = dead_letter(dead, "too_deep")
    assert header(list(letter.headers), "lapverse-dlq-agent") == "governor"
    for tenant in TENANTS:  # every task ran and was charged exactly once
        deadline = time.monotonic() + 60
        while True:
            ledger = await ledger_of(settings, tenant)
            spent = sum(sum(c.values()) for c in ledger.get("spend", {}).values())
            if not ledger.get("reserved") and spent:
                break
            assert time.monotonic() < deadline, ledger
            await asyncio.sleep(0.5)
        assert spent == 20 * 10_000


async def test_forged_unknown_and_over_limit_records(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    settings = stack.settings
    tags = FinOpsTags(
        environment="dev", tenant_id="limited", cost_center="platform", owner="qa", version="1"
    )
    limited = TenantConfig(
        tenant_id="limited", mrr_micros=10**9, rate_limit_per_s=0.5, burst=2, tags=tags
    )
    now = int(time.time() * 1000)
    config = encode(envelope("tenant.configured", "limited:1", "limited", limited, now, "/admin"))
    await producer.send_and_wait(settings.topic(topics.TENANTS), config, key=b"limited")
    await producer.send_and_wait(settings.topic(topics.TENANTS), b"\x00garbage", key=b"limited")
    async with aiohttp.ClientSession() as session:
        await create_tenant(session, stack, "victim")
    # keyed by the attacker's tenant, carrying the victim's data: it would split their ledger
    await send(producer, settings, "limited", request("victim", "forged"))
    await send(producer, settings, "victim", request("victim", "typo", type="ANALYSYS"))
    for i in range(4):
        await send(producer, settings, "limited", request("limited", f"burst-{i}"))
    await producer.flush()
    burst_ids = {idempotency.task_id("limited", f"burst-{i}") for i in range(4)}
    typo_id = idempotency.task_id("victim", "typo")
    records = await read_topic(
        settings,
        topics.TASK_DECISIONS,
        lambda rs: len(decided(rs, burst_ids | {typo_id})) == 5,
        timeout_s=60,
    )
    decisions = decided(records, burst_ids | {typo_id})
    typo = decisions.pop(typo_id)
    assert (typo["httpStatus"], typo["reason"]) == (400, "invalid_request")
    assert header(typo["_headers"], "lapverse-reply-only") == "true"
    statuses = sorted(d["httpStatus"] for d in decisions.values())
    assert statuses == [202, 202, 429, 429]  # burst 2: the config survived the garbage after it
    limited_reply = next(d for d in decisions.values() if d["httpStatus"] == 429)
    assert limited_reply["rateLimit"]["limit"] == 2
    assert limited_reply["retryAfterS"] >= 1
    assert idempotency.task_id("victim", "forged") not in decided(
        records, {idempotency.task_id("victim", "forged")}
    )
    dead = await read_topic(
        settings,
        topics.DLQ,
        lambda rs: bool(dead_letter(rs, "key_mismatch")) and bool(dead_letter(rs, "not_json")),
    )
    agents = {header(list(r.headers), "lapverse-dlq-agent") for r in dead_letter(dead, "not_json")}
    assert "config-view" in agents  # the worker's view of tenants dead-lettered it and lived
    assert (await ledger_of(settings, "victim")) == {}  # no reservation, no burn for the typo
    async with aiohttp.ClientSession() as session:
        worker = f"http://127.0.0.1:{settings.worker_web_port}/metrics"
        async with session.get(worker) as r:
            text = await r.text()
    assert 'lapverse_dlq_total{agent="governor",reason="key_mismatch"}' in text
    assert 'lapverse_rate_limited_total{tenant="limited"} 2.0' in text
