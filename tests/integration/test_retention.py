"""Idempotency keys expire: the worker deletes finished records after the retention period."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import orjson
import pytest

from tests.conftest import Stack
from tests.integration.helpers import create_tenant, post_task, read_topic, task_body, wait_task

pytestmark = pytest.mark.kafka


def test_a_finished_task_is_forgotten_after_the_retention_and_its_key_is_free_again(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(LAPVERSE_IDEMPOTENCY_RETENTION_S="2")
    stack.up()
    asyncio.run(expire(stack))


async def expire(stack: Stack) -> None:
    """Complete a task, wait for its dedup tombstone, then reuse its key."""
    async with aiohttp.ClientSession() as session:
        api_key = await create_tenant(session, stack, "brief")
        body = task_body("brief")
        status, _, raw = await post_task(session, stack, api_key, "brief", body, key="k1")
        assert status == 202, raw
        task_id = orjson.loads(raw)["taskId"]
        await wait_task(session, stack, api_key, "brief", task_id)
        status, headers, _ = await post_task(session, stack, api_key, "brief", body, key="k1")
        assert (status, headers.get("Idempotent-Replayed")) == (202, "true")

        changelog = f"{stack.settings.topic_prefix}lapverse-streams-dedup-changelog"
        key = orjson.dumps(task_id)
        await read_topic(
            stack.settings,
            changelog,
            lambda records: any(r.key == key and r.value is None for r in records),
            timeout_s=20,
        )
        status, headers, raw = await post_task(session, stack, api_key, "brief", body, key="k1")
        assert status == 202, raw
        assert "Idempotent-Replayed" not in headers  # decided anew, not replayed
