"""The governed task pipeline against a real broker, worker and gateway processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from lapverse_streams.domain import idempotency
from lapverse_streams.domain.pricing import billing_period
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode, envelope, header
from lapverse_streams.events.models import TaskRequested
from tests.conftest import Stack
from tests.integration.helpers import (
    ADMIN,
    create_tenant,
    drain,
    ledger_of,
    post_task,
    read_topic,
    task_body,
    wait_task,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_auth_and_input_errors_are_problem_json(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    key = await create_tenant(session, stack, "auth")
    body = task_body("auth")
    url = f"{stack.base_url}/api/v2/tasks"
    cases = [
        ({"X-Tenant-ID": "auth", "Idempotency-Key": "a"}, body, 401),
        (
            {"Authorization": "Bearer lv_wrong", "X-Tenant-ID": "auth", "Idempotency-Key": "a"},
            body,
            401,
        ),
        (
            {"Authorization": f"Bearer {key}", "X-Tenant-ID": "other", "Idempotency-Key": "a"},
            body,
            403,
        ),
        ({"Authorization": f"Bearer {key}", "X-Tenant-ID": "auth"}, body, 400),
        (
            {"Authorization": f"Bearer {key}", "X-Tenant-ID": "auth", "Idempotency-Key": "k" * 256},
            body,
            400,
        ),
        (
            {"Authorization": f"Bearer {key}", "X-Tenant-ID": "auth", "Idempotency-Key": "a"},
            {**body, "tenant": "other"},
            403,
        ),
    ]
    for headers, payload, status in cases:
        async with session.post(url, json=payload, headers=headers) as r:
            assert r.status == status, (headers, await r.text())
            assert r.content_type == "application/problem+json"
    good = {"Authorization": f"Bearer {key}", "X-Tenant-ID": "auth", "Idempotency-Key": "b"}
    async with session.post(
        url, json={**body, "priority": "urgent", "requirements": {"complexity": 3}}, headers=good
    ) as r:
        problem = await r.json()
        assert r.status == 400
        assert problem["fields"] == ["priority", "requirements.complexity"]
    async with session.post(
        url, data=b"{not json", headers={**good, "Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
    async with session.post(
        url, data=b"x" * 100_000, headers={**good, "Content-Type": "application/json"}
    ) as r:
        assert r.status == 413
    async with session.get(f"{stack.base_url}/admin/v1/flags/x", headers=ADMIN) as r:
        assert r.status == 405
        assert r.content_type == "application/problem+json"
    async with session.put(f"{stack.base_url}/admin/v1/tenants/x", json={"mrr": 1}) as r:
        assert r.status == 401


async def test_accept_complete_replay_and_conflict(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    key = await create_tenant(session, stack, "acme")
    status, headers, raw = await post_task(
        session, stack, key, "acme", task_body("acme"), key="order-1"
    )
    assert status == 202, raw
    first = orjson.loads(raw)
    assert first["status"] == "accepted"
    assert first["costEstimate"] == 0.01
    assert first["tags"]["tenantId"] == "acme"
    assert first["taskId"] == idempotency.task_id("acme", "order-1")
    assert headers["Location"] == f"/api/v2/tasks/{first['taskId']}"
    done = await wait_task(session, stack, key, "acme", first["taskId"])
    assert done["status"] == "completed"
    assert done["cost"] == 0.01
    assert done["result"]["sentiment"]["label"] == "positive"

    status, headers, again = await post_task(
        session, stack, key, "acme", task_body("acme"), key="order-1"
    )
    assert (status, headers.get("Idempotent-Replayed"), again) == (202, "true", raw)

    status, _, conflict = await post_task(
        session, stack, key, "acme", task_body("acme", description="other"), key="order-1"
    )
    assert status == 422, conflict

    other_key = await create_tenant(session, stack, "globex")
    async with session.get(
        f"{stack.base_url}/api/v2/tasks/{first['taskId']}",
        headers={"Authorization": f"Bearer {other_key}", "X-Tenant-ID": "globex"},
    ) as r:
        assert r.status == 404


async def test_a_task_is_running_between_its_decision_and_its_result(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    key = await create_tenant(session, stack, "slow")
    body = task_body("slow", type="CHAOS", requirements={"sleepMs": 3000, "failAttempts": 0})
    status, _, raw = await post_task(session, stack, key, "slow", body)
    assert status == 202, raw
    task_id = orjson.loads(raw)["taskId"]
    running = await wait_task(session, stack, key, "slow", task_id, done=("running",))
    assert running["result"] is None
    done = await wait_task(session, stack, key, "slow", task_id)
    assert done["status"] == "completed"


async def test_flag_turns_a_task_type_off_for_one_tenant(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    key = await create_tenant(session, stack, "flagged")
    flag = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "on",
        "targeting": {"if": [{"==": [{"var": "tenantId"}, "flagged"]}, "off", "on"]},
    }
    async with session.put(
        f"{stack.base_url}/admin/v1/flags/task-type.ANALYSIS", json=flag, headers=ADMIN
    ) as r:
        assert r.status == 200, await r.text()
    async with session.put(
        f"{stack.base_url}/admin/v1/flags/bad", json={"variants": {}}, headers=ADMIN
    ) as r:
        assert r.status == 400
    deadline = time.monotonic() + 10
    status = 0
    while status != 404 and time.monotonic() < deadline:  # the worker reads the flag asynchronously
        status, _, raw = await post_task(session, stack, key, "flagged", task_body("flagged"))
    assert status == 404, raw
    status, _, _ = await post_task(
        session, stack, key, "flagged", task_body("flagged", type="NOOP")
    )
    assert status == 202


async def test_margin_guardrail_answers_402(session: aiohttp.ClientSession, stack: Stack) -> None:
    key = await create_tenant(session, stack, "tiny", mrr=0.02)  # 70 % = $0.014
    assert (await post_task(session, stack, key, "tiny", task_body("tiny")))[0] == 202
    status, _, raw = await post_task(session, stack, key, "tiny", task_body("tiny"))
    assert status == 402, raw
    assert orjson.loads(raw)["type"].endswith("margin-exceeded")


async def test_exhausted_error_budget_answers_503_with_retry_after(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    key = await create_tenant(session, stack, "flaky", sloTarget=0.9)
    ids = []
    for _ in range(10):
        status, _, raw = await post_task(
            session, stack, key, "flaky", task_body("flaky", type="CHAOS")
        )
        assert status == 202, raw
        ids.append(orjson.loads(raw)["taskId"])
    for task_id in ids:
        assert (await wait_task(session, stack, key, "flaky", task_id))["status"] == "failed"
    dead = await drain(stack.settings, stack.settings.topic(topics.DLQ))
    causes = [
        dict(r.headers) for r in dead if orjson.loads(r.value).get("data", {}).get("taskId") in ids
    ]
    assert len(causes) == 10  # each failed task's decision, with why it failed
    assert {c["lapverse-dlq-reason"] for c in causes} == {b"handler_failed"}
    assert all(b"chaos: injected failure" in c["lapverse-dlq-error"] for c in causes)
    deadline = time.monotonic() + 10
    status = 0
    while (
        status != 503 and time.monotonic() < deadline
    ):  # the governor reads results asynchronously
        status, headers, raw = await post_task(
            session, stack, key, "flaky", task_body("flaky", type="CHAOS")
        )
    assert status == 503, raw
    assert int(headers["Retry-After"]) >= 60


async def test_direct_producer_and_dead_letters(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    await create_tenant(session, stack, "direct")
    settings = stack.settings
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        request = TaskRequested(type="ANALYSIS", tenant="direct", description="direct to kafka")
        event = envelope(
            "task.requested", "direct-key-1", "direct", request, int(time.time() * 1000), "/svc"
        )
        await producer.send_and_wait(settings.topic(topics.TASKS), encode(event), key=b"direct")
        await producer.send_and_wait(
            settings.topic(topics.TASKS), b"\xff garbage", key=b"direct", headers=[("x", b"1")]
        )
    finally:
        await producer.stop()
    task_id = idempotency.task_id("direct", "direct-key-1")
    decisions = await read_topic(
        settings, topics.TASK_DECISIONS, lambda rs: any(task_id.encode() in r.value for r in rs)
    )
    [decision] = [orjson.loads(r.value) for r in decisions if task_id.encode() in r.value]
    assert decision["type"] == "io.lapverse.task.accepted.v1"
    dead = await read_topic(
        settings, topics.DLQ, lambda rs: any(r.value == b"\xff garbage" for r in rs)
    )
    [letter] = [r for r in dead if r.value == b"\xff garbage"]
    assert letter.key == b"direct"
    hdrs = list(letter.headers)
    assert header(hdrs, "x") == "1"
    assert header(hdrs, "lapverse-dlq-reason") == "not_json"
    assert header(hdrs, "lapverse-dlq-offset") is not None
    # the agent carried on after the poison message
    status, _, raw = await post_task(
        session, stack, await create_tenant(session, stack, "after"), "after", task_body("after")
    )
    assert status == 202, raw


async def test_fifty_concurrent_posts_with_one_key_make_one_task_and_one_charge(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    key = await create_tenant(session, stack, "burst")
    results = await asyncio.gather(
        *(
            post_task(session, stack, key, "burst", task_body("burst"), key="same")
            for _ in range(50)
        )
    )
    statuses = sorted(status for status, _, _ in results)
    assert set(statuses) <= {202, 409}
    originals = [r for r in results if r[0] == 202 and "Idempotent-Replayed" not in r[1]]
    assert len(originals) == 1
    task_id = idempotency.task_id("burst", "same")
    await wait_task(session, stack, key, "burst", task_id)
    decisions = await drain(stack.settings, stack.settings.topic(topics.TASK_DECISIONS))
    accepted = {
        r.value
        for r in decisions
        if task_id.encode() in r.value and header(list(r.headers), "lapverse-replayed") is None
    }
    assert len(accepted) == 1
    deadline = time.monotonic() + 10
    ledger: dict[str, object] = {}
    while time.monotonic() < deadline:
        ledger = await ledger_of(stack.settings, "burst")
        if ledger.get("spend"):
            break
    assert ledger["spend"] == {billing_period(int(time.time() * 1000)): {"marketing": 10_000}}
    assert ledger["reserved"] == {}


async def test_metrics_on_gateway_and_worker(session: aiohttp.ClientSession, stack: Stack) -> None:
    key = await create_tenant(session, stack, "metered")
    _, _, raw = await post_task(session, stack, key, "metered", task_body("metered"))
    await wait_task(session, stack, key, "metered", orjson.loads(raw)["taskId"])
    async with session.get(f"{stack.base_url}/metrics") as r:
        text = await r.text()
        assert (
            'lapverse_http_requests_total{method="POST",route="/api/v2/tasks",status="202"}' in text
        )
    worker = f"http://127.0.0.1:{stack.settings.worker_web_port}/metrics"
    completed = 'lapverse_tasks_total{outcome="completed",tenant="metered",type="ANALYSIS"} 1.0'
    deadline = time.monotonic() + 10
    text = ""
    while (
        completed not in text and time.monotonic() < deadline
    ):  # the governor counts results a moment later
        async with session.get(worker) as r:
            text = await r.text()
    assert completed in text
    assert 'lapverse_admission_decisions_total{reason="accepted"}' in text
    assert "lapverse_task_duration_ms_bucket" in text
    async with session.get(f"{stack.base_url}/api/status", headers=ADMIN) as r:
        report = await r.json()
        assert report["broker"]["connected"] is True
        assert report["tenants"]["metered"]["completed"] == 1
        assert report["tenants"]["metered"]["budgetRemaining"] == 1.0
        assert report["status"] in ("healthy", "degraded", "unhealthy")
