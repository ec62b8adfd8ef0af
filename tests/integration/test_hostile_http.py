"""Hostile HTTP input against a running stack: every one gets a 4xx problem, none a 5xx."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from lapverse_streams.events import topics
from lapverse_streams.gateway.inputs import known_task_types
from tests.conftest import Stack
from tests.integration.helpers import ADMIN, create_tenant, drain, post_task, task_body

pytestmark = pytest.mark.kafka


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"complexity": "simple"}
    for _ in range(depth):
        value = {"x": value}
    return value


def problem_of(status: int, headers: dict[str, str], raw: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, raw
    assert headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = orjson.loads(raw)
    return body


async def raw_status(stack: Stack, head: bytes) -> tuple[int, bytes]:
    """Send raw HTTP/1.1 bytes to the gateway; the status and the response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.settings.gateway_port)
    writer.write(head)
    await writer.drain()
    data = await reader.read(65536)
    writer.close()
    await writer.wait_closed()
    return int(data.split(b" ", 2)[1]), data


async def test_deep_nesting_gets_400_and_nothing_reaches_the_tasks_topic(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    tenant = f"deep-{uuid.uuid4().hex[:6]}"
    key = await create_tenant(session, stack, tenant)
    body = task_body(tenant, requirements=nested(251))
    assert len(orjson.dumps(body)) < 2_000
    found = problem_of(*await post_task(session, stack, key, tenant, body), 400)
    assert "nesting is deeper than 32 levels" in found["detail"]
    records = await drain(stack.settings, stack.settings.topic(topics.TASKS))
    assert not [r for r in records if r.key == tenant.encode()]


@pytest.mark.parametrize("token", [b"\xff\xfe\xfd", b"lv_\xe2\x82\xac\xc3\xa9x", b"\x80abc"])
async def test_non_utf8_bearer_gets_401(stack: Stack, token: bytes) -> None:
    for request_line in (b"POST /api/v2/tasks", b"PUT /admin/v1/flags/x", b"GET /api/status"):
        head = (
            request_line
            + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + token
            + b"\r\nX-Tenant-ID: acme\r\nIdempotency-Key: k\r\nContent-Type: application/json"
            + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        status, data = await raw_status(stack, head)
        assert status == 401, data
        assert b"application/problem+json" in data


@pytest.mark.parametrize("mrr", [b"1e308", b"1e400", b"-1e308", b"NaN", b'"NaN"', b'"Infinity"'])
async def test_huge_or_non_finite_mrr_gets_400(
    stack: Stack, session: aiohttp.ClientSession, mrr: bytes
) -> None:
    async with session.put(
        f"{stack.base_url}/admin/v1/tenants/rich",
        data=b'{"mrr": ' + mrr + b"}",
        headers={**ADMIN, "Content-Type": "application/json"},
    ) as r:
        problem_of(r.status, dict(r.headers), await r.read(), 400)


async def test_unknown_task_type_gets_400_naming_the_known_types(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    tenant = f"typo-{uuid.uuid4().hex[:6]}"
    key = await create_tenant(session, stack, tenant)
    answer = await post_task(session, stack, key, tenant, task_body(tenant, type="ANALYSYS"))
    found = problem_of(*answer, 400)
    known = known_task_types(stack.settings)  # CHAOS only where drills are on
    assert f"known types: {', '.join(known)}" in found["detail"]
    assert {"ANALYSIS", "NOOP"} <= set(found["knownTypes"])
    assert ("CHAOS" in found["knownTypes"]) is stack.settings.drills_enabled
    records = await drain(stack.settings, stack.settings.topic(topics.TASKS))
    assert not [r for r in records if r.key == tenant.encode()]


@pytest.mark.parametrize("tenant_id", ["%2E", "%2E%2E", "-x", "a%20b", "%C3%A9"])
async def test_tenant_ids_outside_the_pattern_get_400(
    stack: Stack, session: aiohttp.ClientSession, tenant_id: str
) -> None:
    url = URL(f"{stack.base_url}/admin/v1/tenants/{tenant_id}", encoded=True)
    async with session.put(url, json={"mrr": 1}, headers=ADMIN) as r:
        found = problem_of(r.status, dict(r.headers), await r.read(), 400)
    assert found["fields"] == ["tenantId"]


async def test_bad_fractional_weights_get_400(stack: Stack, session: aiohttp.ClientSession) -> None:
    for weights in ([["on", -5], ["off", 105]], [["on", 0.5], ["off", 99.5]], [["on", 0]]):
        flag = {
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"fractional": weights},
        }
        async with session.put(
            f"{stack.base_url}/admin/v1/flags/family.rollout", json=flag, headers=ADMIN
        ) as r:
            found = problem_of(r.status, dict(r.headers), await r.read(), 400)
        assert "fractional" in found["detail"]


async def test_405_carries_allow(stack: Stack, session: aiohttp.ClientSession) -> None:
    async with session.delete(f"{stack.base_url}/api/v2/tasks") as r:
        problem_of(r.status, dict(r.headers), await r.read(), 405)
        assert r.headers["Allow"] == "POST"


async def test_status_shows_each_caller_only_what_it_may_see(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    a, b = f"sa-{uuid.uuid4().hex[:6]}", f"sb-{uuid.uuid4().hex[:6]}"
    key_a = await create_tenant(session, stack, a)
    await create_tenant(session, stack, b)
    async with session.get(f"{stack.base_url}/api/status") as r:
        public = await r.json()
    assert "tenants" not in public
    assert "workers" not in public
    assert {"status", "healthScore", "broker"} <= set(public)
    headers = {"Authorization": f"Bearer {key_a}", "X-Tenant-ID": a}
    async with session.get(f"{stack.base_url}/api/status", headers=headers) as r:
        assert set((await r.json())["tenants"]) == {a}
    async with session.get(f"{stack.base_url}/api/status", headers=ADMIN) as r:
        assert {a, b} <= set((await r.json())["tenants"])


async def wait_status(
    session: aiohttp.ClientSession, stack: Stack, api_key: str, tenant: str, want: int
) -> float:
    """Poll a tenant GET with `api_key` until it answers `want`; seconds it took."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {api_key}", "X-Tenant-ID": tenant}
    while time.monotonic() - started < 10:
        async with session.get(f"{stack.base_url}/api/status", headers=headers) as r:
            if r.status == want:
                return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise TimeoutError(f"never answered {want}")


async def test_a_revoked_key_stops_working_and_the_other_goes_on(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    tenant = f"rot-{uuid.uuid4().hex[:6]}"
    old_key = await create_tenant(session, stack, tenant)
    keys_url = f"{stack.base_url}/admin/v1/tenants/{tenant}/api-keys"
    async with session.post(keys_url, headers=ADMIN) as r:
        new_key = (await r.json())["apiKey"]
    async with session.get(keys_url, headers=ADMIN) as r:
        text = await r.text()
        listed = (await r.json())["apiKeys"]
    assert old_key not in text
    assert new_key not in text
    assert [k["last4"] for k in listed] == [old_key[-4:], new_key[-4:]]
    old_id = listed[0]["keyId"]
    async with session.delete(f"{keys_url}/{old_id}", headers=ADMIN) as r:
        assert r.status == 204
    async with session.delete(f"{keys_url}/{old_id}", headers=ADMIN) as r:
        problem_of(r.status, dict(r.headers), await r.read(), 404)
    assert await wait_status(session, stack, old_key, tenant, 401) < 5
    assert await wait_status(session, stack, new_key, tenant, 200) < 1
    status, headers, _ = await post_task(session, stack, new_key, tenant, task_body(tenant))
    assert status == 202
    assert headers["RateLimit-Policy"].startswith('"tenant";q=')
