"""Fair executor slots: one tenant's slow tasks do not hold up another tenant's fast task."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import orjson
import pytest

from tests.conftest import Stack
from tests.integration.helpers import create_tenant, post_task, task_body, wait_task

pytestmark = pytest.mark.kafka
SLOW_TASKS = 20
ANY_STATUS = ("accepted", "running", "completed", "failed")


@pytest.fixture(scope="module")
def drills_stack(stack_factory: Callable[..., Stack]) -> Stack:
    """A stack with drills on and few executor slots: 8 in all, 2 per tenant."""
    return stack_factory(
        LAPVERSE_DRILLS_ENABLED="true",
        LAPVERSE_EXECUTOR_CONCURRENCY="8",
        LAPVERSE_EXECUTOR_TENANT_CONCURRENCY="2",
    ).up()


async def test_a_tenant_filling_the_executor_does_not_delay_another_tenants_task(
    drills_stack: Stack,
) -> None:
    stack = drills_stack
    async with aiohttp.ClientSession() as session:
        hog_key = await create_tenant(session, stack, "hog")
        fast_key = await create_tenant(session, stack, "fast")
        slow = task_body("hog", type="CHAOS", requirements={"sleepMs": 3000, "failureRate": 0})
        hog_ids = []
        for _ in range(SLOW_TASKS):
            status, _, raw = await post_task(session, stack, hog_key, "hog", slow)
            assert status == 202, raw
            hog_ids.append(orjson.loads(raw)["taskId"])
        # the executor has taken the hog's first tasks; the rest wait in its queue
        await wait_task(session, stack, hog_key, "hog", hog_ids[0], ("running", "completed"))

        status, _, raw = await post_task(
            session, stack, fast_key, "fast", task_body("fast", type="NOOP")
        )
        assert status == 202, raw
        fast_id = orjson.loads(raw)["taskId"]
        done = await wait_task(session, stack, fast_key, "fast", fast_id)
        assert done["status"] == "completed"

        # the fast task went ahead of the hog's waiting tasks (first come would have run them
        # all before it): when it is done, most of the hog's are still waiting to start
        statuses = [await status_of(session, stack, hog_key, t) for t in hog_ids]
        assert statuses.count("running") <= 2  # the per-tenant cap
        assert statuses.count("accepted") >= SLOW_TASKS // 2

        # queued, not dropped: every slow task completes in the end
        for task_id in hog_ids:
            finished = await wait_task(session, stack, hog_key, "hog", task_id, timeout_s=120)
            assert finished["status"] == "completed"


async def status_of(
    session: aiohttp.ClientSession, stack: Stack, api_key: str, task_id: str
) -> str:
    """A task's status as the gateway shows it now."""
    return str((await wait_task(session, stack, api_key, "hog", task_id, ANY_STATUS))["status"])
