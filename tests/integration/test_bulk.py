"""POST /api/v2/tasks:batch against a real broker, worker and gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from lapverse_streams.broker.embedded import free_port
from lapverse_streams.broker.engines import Broker, embedded_broker
from lapverse_streams.domain import idempotency
from lapverse_streams.domain.pricing import billing_period
from lapverse_streams.events import topics
from lapverse_streams.events.codec import header
from lapverse_streams.gateway.bulk import MAX_BATCH_TASKS
from tests.conftest import ENGINE, Stack
from tests.integration.helpers import (
    create_tenant,
    drain,
    ledger_of,
    post_task,
    settled_ledger,
    task_body,
    wait_task,
)

pytestmark = pytest.mark.kafka


def item(key: str, tenant: str, **overrides: Any) -> dict[str, Any]:
    """A task of a batch: a valid task body plus its idempotency key."""
    return {"idempotencyKey": key, **task_body(tenant, **overrides)}


async def post_batch(
    session: aiohttp.ClientSession, stack: Stack, api_key: str, tenant: str, body: Any
) -> tuple[int, dict[str, str], Any]:
    """POST /api/v2/tasks:batch; returns status, headers and the parsed body."""
    headers = {"Authorization": f"Bearer {api_key}", "X-Tenant-ID": tenant}
    async with session.post(
        f"{stack.base_url}/api/v2/tasks:batch", json=body, headers=headers
    ) as r:
        return r.status, dict(r.headers), orjson.loads(await r.read())


async def written_ids(stack: Stack) -> set[str]:
    """The CloudEvent ids (idempotency keys) of every request on the tasks topic."""
    records = await drain(stack.settings, stack.settings.topic(topics.TASKS))
    return {orjson.loads(r.value)["id"] for r in records}


async def test_a_mixed_batch_answers_each_task_and_charges_each_accepted_one_once(
    stack: Stack,
) -> None:
    async with aiohttp.ClientSession() as session:
        await mixed_batch(session, stack)


async def mixed_batch(session: aiohttp.ClientSession, stack: Stack) -> None:
    tenant = "bulk-tiny"
    api_key = await create_tenant(session, stack, tenant, mrr=0.10)  # 70 % = $0.07
    first = await post_task(session, stack, api_key, tenant, task_body(tenant), key="first")
    assert first[0] == 202, first[2]
    used = await post_task(session, stack, api_key, tenant, task_body(tenant), key="used")
    assert used[0] == 202, used[2]
    batch = [
        item("fresh-1", tenant),
        item("first", tenant),  # the same payload: a replay
        item("used", tenant, description="another payload"),  # 422
        item("big", tenant, requirements={"complexity": "expert"}),  # $0.08 > 70 % of MRR
        item("broken", tenant, priority="urgent"),  # 400
        {**item("foreign", tenant), "tenant": "globex"},  # 403
        item("fresh-2", tenant),
    ]
    status, headers, out = await post_batch(session, stack, api_key, tenant, batch)
    assert status == 207, out
    assert "RateLimit-Policy" in headers
    results = {r["idempotencyKey"]: r for r in out["results"]}
    assert [r["idempotencyKey"] for r in out["results"]] == [i["idempotencyKey"] for i in batch]
    assert {k: (r["status"], r["replayed"]) for k, r in results.items()} == {
        "fresh-1": (202, False),
        "first": (202, True),
        "used": (422, False),
        "big": (402, False),
        "broken": (400, False),
        "foreign": (403, False),
        "fresh-2": (202, False),
    }
    assert results["first"]["body"] == orjson.loads(first[2])  # the first decision, replayed
    assert results["first"]["headers"]["Idempotent-Replayed"] == "true"
    assert results["big"]["body"]["type"].endswith("/margin-exceeded")
    assert results["broken"]["body"]["fields"] == ["priority"]
    accepted = ["first", "used", "fresh-1", "fresh-2"]
    for key in ("fresh-1", "fresh-2"):
        body = results[key]["body"]
        assert body == {
            "taskId": idempotency.task_id(tenant, key),
            "status": "accepted",
            "costEstimate": 0.01,
            "tags": body["tags"],
        }
        assert results[key]["headers"]["Location"] == f"/api/v2/tasks/{body['taskId']}"
    for key in accepted:
        task_id = idempotency.task_id(tenant, key)
        done = await wait_task(session, stack, api_key, tenant, task_id)
        assert (done["status"], done["cost"]) == ("completed", 0.01)
    ledger = await settled_ledger(stack.settings, tenant)
    period = billing_period(int(time.time() * 1000))
    assert ledger["spend"] == {period: {"marketing": len(accepted) * 10_000}}
    assert ledger["reserved"] == {}

    # The same batch again: every kept decision is replayed, nothing is charged twice.
    status, _, again = await post_batch(session, stack, api_key, tenant, batch)
    assert status == 207, again
    assert [(r["status"], r["replayed"]) for r in again["results"]] == [
        (202, True), (202, True), (422, False), (402, True), (400, False), (403, False),
        (202, True),
    ]  # fmt: skip
    assert (await ledger_of(stack.settings, tenant))["spend"] == ledger["spend"]
    # Each written task went to Kafka once per POST, with its own request id for the answer.
    records = await drain(stack.settings, stack.settings.topic(topics.TASKS))
    mine = [r for r in records if orjson.loads(r.value)["subject"] == tenant]
    assert len({header(r.headers, "lapverse-request-id") for r in mine}) == len(mine)


async def test_a_malformed_batch_is_refused_whole_and_writes_nothing(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        await malformed_batches(session, stack)


async def malformed_batches(session: aiohttp.ClientSession, stack: Stack) -> None:
    tenant = "bulk-envelope"
    api_key = await create_tenant(session, stack, tenant)
    too_many = [item(f"many-{i}", tenant) for i in range(MAX_BATCH_TASKS + 1)]
    twice = [item("twice", tenant), item("once", tenant), item("twice", tenant)]
    for body, code in ((too_many, "invalid-batch"), (twice, "duplicate-idempotency-key")):
        status, headers, problem = await post_batch(session, stack, api_key, tenant, body)
        assert status == 400, problem
        assert headers["Content-Type"] == "application/problem+json"
        assert problem["type"].endswith(f"/{code}")
    assert problem["keys"] == ["twice"]
    status, _, problem = await post_batch(
        session, stack, api_key, "globex", [item("wrong", tenant)]
    )
    assert status == 403, problem
    assert problem["type"].endswith("/wrong-tenant")
    written = await written_ids(stack)
    assert written.isdisjoint({"twice", "once", "wrong", *(f"many-{i}" for i in range(101))})
    # A full batch of 100 is fine.
    full = [item(f"full-{i}", tenant) for i in range(MAX_BATCH_TASKS)]
    status, _, out = await post_batch(session, stack, api_key, tenant, full)
    assert status == 207, out
    assert {r["status"] for r in out["results"]} == {202}


def test_a_batch_while_the_broker_is_down_is_a_503_and_nothing_is_accepted(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    broker = embedded_broker(ENGINE, free_port(), log_path=tmp_path / f"{ENGINE}.log")
    broker.start()
    try:
        lonely = stack_factory(LAPVERSE_BROKER_URL=broker.url, LAPVERSE_DECISION_TIMEOUT_MS="500")
        lonely.start("gateway")
        lonely.wait_ready("gateway")
        asyncio.run(batch_after_the_broker_dies(lonely, broker))
    finally:
        broker.stop()


async def batch_after_the_broker_dies(stack: Stack, broker: Broker) -> None:
    async with aiohttp.ClientSession() as session:
        api_key = await create_tenant(session, stack, "bulk-down")
        broker.stop()
        batch = [item("a", "bulk-down"), item("b", "bulk-down")]
        status, headers, problem = await post_batch(session, stack, api_key, "bulk-down", batch)
    assert status == 503, problem
    assert headers["Retry-After"] == "5"
    assert headers["Content-Type"] == "application/problem+json"
    assert problem["type"].endswith("/broker-unavailable")
