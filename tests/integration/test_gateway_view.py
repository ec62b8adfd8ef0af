"""The gateway's view on a real stack: bounded, old tasks answer, bad records dead-lettered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.deadletter import REASON_HEADER
from lapverse_streams.events.models import (
    DecisionReason,
    FinOpsTags,
    TaskDecision,
    TaskRequest,
)
from tests.conftest import Stack
from tests.integration.helpers import (
    create_tenant,
    post_task,
    produce_raw,
    read_topic,
    task_body,
    wait_task,
)

pytestmark = pytest.mark.kafka
MAX_TASKS = 20
TENANT = "viewer"


@pytest.fixture(scope="module")
def small_view(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> Stack:
    """A stack whose gateway keeps at most MAX_TASKS tasks in memory."""
    data_dir = str(tmp_path_factory.mktemp("view-data"))
    return stack_factory(
        LAPVERSE_GATEWAY_VIEW_MAX_TASKS=str(MAX_TASKS), LAPVERSE_DATA_DIR=data_dir
    ).up()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(scope="module")
def api_key(small_view: Stack) -> str:
    async def create() -> str:
        async with aiohttp.ClientSession() as client:
            return await create_tenant(client, small_view, TENANT)

    return asyncio.run(create())


async def submit(session: aiohttp.ClientSession, stack: Stack, api_key: str) -> dict[str, Any]:
    status, _, raw = await post_task(session, stack, api_key, TENANT, task_body(TENANT))
    assert status == 202, raw
    body: dict[str, Any] = orjson.loads(raw)
    return body


async def test_old_tasks_still_answer_after_many_more_than_the_view_holds(
    session: aiohttp.ClientSession, small_view: Stack, api_key: str
) -> None:
    posted: list[dict[str, Any]] = []
    for _ in range(6):
        posted += await asyncio.gather(*(submit(session, small_view, api_key) for _ in range(10)))
    assert all(body["status"] != "pending" for body in posted)  # decided synchronously
    for body in posted:
        await wait_task(session, small_view, api_key, TENANT, body["taskId"])
    assert view_files(small_view)  # the view spilled what it could not keep in memory
    for body in posted[:10]:  # long out of the in-memory part of the view
        task = await wait_task(session, small_view, api_key, TENANT, body["taskId"], timeout_s=5)
        assert task["taskId"] == body["taskId"]
        assert task["status"] == "completed"
        assert task["cost"] == 0.01
        assert task["tags"]["tenantId"] == TENANT
    other = await create_tenant(session, small_view, "bystander")
    headers = {"Authorization": f"Bearer {other}", "X-Tenant-ID": "bystander"}
    url = f"{small_view.base_url}/api/v2/tasks/{posted[0]['taskId']}"
    async with session.get(url, headers=headers) as r:
        assert r.status == 404  # an old task is still another tenant's


def view_files(stack: Stack) -> list[str]:
    """The gateway view's files in the stack's data directory."""
    return sorted(p.name for p in Path(stack.settings.data_dir).glob("gateway-view-*.sqlite"))


def bad_decision_records() -> list[tuple[bytes | None, bytes | None]]:
    tags = FinOpsTags(
        environment="dev", tenant_id=TENANT, cost_center="x", owner="qa", version="0.1.0"
    )
    decision = TaskDecision(
        task_id="forged",
        idempotency_key="forged",
        status="accepted",
        reason=DecisionReason.ACCEPTED,
        http_status=202,
        detail="accepted",
        cost_estimate_micros=1,
        request=TaskRequest(type="ANALYSIS", tenant=TENANT),
        tags=tags,
        decided_at_ms=1,
    )
    good = encode(envelope("task.accepted", "forged", TENANT, decision, 1, "/evil"))
    without_task_id = orjson.loads(good)
    del without_task_id["data"]["taskId"]
    return [
        (TENANT.encode(), b"not json at all"),
        (TENANT.encode(), orjson.dumps(without_task_id)),
        (b"someone-else", good),  # the key disagrees with the subject and data
    ]


def bad_status_record() -> tuple[bytes | None, bytes | None]:
    event = {
        "specversion": "1.0",
        "id": "w",
        "source": "/evil",
        "type": "io.lapverse.worker.status.v1",
        "subject": "w-evil",
        "time": "2024-01-01T00:00:00Z",
        "data": {"workerId": "w-evil", "breakers": [], "consumerLag": "lots"},
    }
    return b"w-evil", orjson.dumps(event)


def letters_of(records: list[Any], agent: str) -> dict[bytes, str]:
    """Original value -> dead-letter reason, for the letters of one agent."""
    found = {}
    for record in records:
        headers = dict(record.headers or ())
        if headers.get("lapverse-dlq-agent") == agent.encode():
            found[record.value] = headers[REASON_HEADER].decode()
    return found


async def test_bad_records_are_dead_lettered_and_the_gateway_keeps_answering(
    session: aiohttp.ClientSession, small_view: Stack, api_key: str
) -> None:
    settings = small_view.settings
    decisions = bad_decision_records()
    status_key, status_value = bad_status_record()
    await produce_raw(settings, topics.TASK_DECISIONS, decisions)
    await produce_raw(settings, topics.WORKER_STATUS, [(status_key, status_value)])
    await produce_raw(settings, topics.TENANTS, [(b"ghost", b"{broken")])
    expected = {
        decisions[0][1]: "not_json",
        decisions[1][1]: "wrong_schema",
        decisions[2][1]: "key_mismatch",
        status_value: "wrong_schema",
    }

    def all_there(records: list[Any]) -> bool:
        return expected.items() <= letters_of(records, "gateway-reader").items() and (
            letters_of(records, "config-view").get(b"{broken") == "not_json"
        )

    await read_topic(settings, topics.DLQ, all_there, timeout_s=30)
    body = await submit(session, small_view, api_key)  # the reader is alive: a sync decision
    assert body["status"] == "accepted"
    task = await wait_task(session, small_view, api_key, TENANT, body["taskId"])
    assert task["status"] == "completed"
    async with session.get(f"{small_view.base_url}/api/status") as r:
        assert r.status == 200


async def test_a_gateway_restarted_over_a_bad_tenant_record_starts_and_answers(
    session: aiohttp.ClientSession, small_view: Stack, api_key: str
) -> None:
    await produce_raw(small_view.settings, topics.TENANTS, [(b"ghost2", b"\xff\xfe")])
    body = await submit(session, small_view, api_key)
    left_behind = view_files(small_view)
    small_view.kill("gateway")
    small_view.start("gateway")
    small_view.wait_ready("gateway")  # readyz 200: the compacted topic did not stop it
    assert not set(left_behind) & set(view_files(small_view))  # a dead gateway's file is removed
    task = await wait_task(session, small_view, api_key, TENANT, body["taskId"])
    assert task["status"] == "completed"
    assert (await submit(session, small_view, api_key))["status"] == "accepted"
