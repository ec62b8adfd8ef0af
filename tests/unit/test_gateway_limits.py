"""The gateway refuses hostile input with a 4xx problem before anything reaches Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from lapverse_streams.config_view import ConfigView
from lapverse_streams.gateway.admin import AdminRoutes
from lapverse_streams.gateway.bridge import Bridge, Reply
from lapverse_streams.gateway.inputs import known_task_types
from lapverse_streams.gateway.problems import Problem, json_response
from lapverse_streams.gateway.rate_limits import tenant_policy
from lapverse_streams.gateway.routes import Routes, decision_response
from lapverse_streams.gateway.server import METRICS, SETTINGS, problems_and_metrics
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.settings import Settings

ADMIN_TOKEN = "unit-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REPORT = {
    "status": "healthy",
    "healthScore": 100,
    "broker": {"connected": True},
    "tenants": {"acme": {"mrr": 1000.0}, "globex": {"mrr": 5000.0}},
    "breakers": {"news-ai": "closed"},
    "consumerLag": {"lapverse-tasks": 0},
    "workers": [{"workerId": "w-1"}],
}


class FakeBridge(Bridge):
    """A bridge that records what would have gone to Kafka and never answers a decision."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.submitted: list[bytes] = []
        self.published: list[tuple[str, bytes]] = []

    async def submit(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        request_id: str,
    ) -> Reply | None:
        self.submitted.append(value)
        return None

    async def publish(self, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
        self.published.append((topic, value))
        return 0, len(self.published) - 1


@dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    bridge: FakeBridge
    config: ConfigView
    api_key: str


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """The gateway's routes and middleware over a fake bridge, with tenant `acme` and a key."""
    settings = Settings(admin_token=ADMIN_TOKEN, data_dir=str(tmp_path))
    config, bridge = ConfigView(settings), FakeBridge(settings)
    routes, admin = Routes(settings, config, bridge), AdminRoutes(settings, config, bridge)
    app = web.Application(
        middlewares=[problems_and_metrics], client_max_size=settings.max_body_bytes
    )
    app[SETTINGS], app[METRICS] = settings, Metrics()
    app.router.add_post("/api/v2/tasks", routes.post_task)
    app.router.add_put("/admin/v1/tenants/{tenant_id}", admin.put_tenant)
    app.router.add_post("/admin/v1/tenants/{tenant_id}/api-keys", admin.post_api_key)
    app.router.add_get("/admin/v1/tenants/{tenant_id}/api-keys", admin.list_api_keys)
    app.router.add_delete("/admin/v1/tenants/{tenant_id}/api-keys/{key_id}", admin.delete_api_key)
    app.router.add_put("/admin/v1/flags/{flag_key}", admin.put_flag)

    async def status(request: web.Request) -> web.Response:
        return json_response(admin.visible_status(request, REPORT))

    app.router.add_get("/api/status", status)
    async with TestClient(TestServer(app)) as client:
        r = await client.put("/admin/v1/tenants/acme", json={"mrr": 1000}, headers=ADMIN)
        assert r.status == 201, await r.text()
        r = await client.post("/admin/v1/tenants/acme/api-keys", headers=ADMIN)
        key = (await r.json())["apiKey"]
        yield Gateway(client, bridge, config, key)


def tenant_headers(gw: Gateway, key: str = "k-1") -> dict[str, str]:
    return {"Authorization": f"Bearer {gw.api_key}", "X-Tenant-ID": "acme", "Idempotency-Key": key}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"complexity": "simple"}
    for _ in range(depth):
        value = {"x": value}
    return value


async def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = orjson.loads(await response.read())
    return body


async def test_deep_nesting_is_refused_naming_the_limit(gateway: Gateway) -> None:
    body = {"type": "ANALYSIS", "requirements": nested(251)}
    assert len(orjson.dumps(body)) < 2_000
    r = await gateway.client.post("/api/v2/tasks", json=body, headers=tenant_headers(gateway))
    assert "32 levels" in (await problem(r, 400))["detail"]
    assert gateway.bridge.submitted == []


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        ({"type": "ANALYSIS", "description": "x" * 20_000}, "16384 characters"),
        ({"type": "ANALYSIS", "requirements": {"tags": list(range(10_001))}}, "10000 items"),
        ({"type": "ANALYSIS", "requirements": {str(n): n for n in range(1_001)}}, "1000 keys"),
    ],
)
async def test_large_strings_arrays_and_objects_are_refused(
    gateway: Gateway, body: dict[str, Any], limit: str
) -> None:
    r = await gateway.client.post("/api/v2/tasks", json=body, headers=tenant_headers(gateway))
    assert limit in (await problem(r, 400))["detail"]
    assert gateway.bridge.submitted == []


async def test_unknown_task_type_is_refused_naming_the_known_ones(gateway: Gateway) -> None:
    body = {"type": "ANALYSYS"}
    r = await gateway.client.post("/api/v2/tasks", json=body, headers=tenant_headers(gateway))
    found = await problem(r, 400)
    assert found["fields"] == ["type"]
    assert "known types: ANALYSIS, NOOP" in found["detail"]
    assert "CHAOS" not in found["knownTypes"]
    assert gateway.bridge.submitted == []
    assert "CHAOS" in known_task_types(Settings(drills_enabled=True))


async def test_a_known_type_goes_to_kafka_with_a_rate_limit_policy(gateway: Gateway) -> None:
    body = {"type": "ANALYSIS"}
    r = await gateway.client.post("/api/v2/tasks", json=body, headers=tenant_headers(gateway))
    assert r.status == 202
    assert r.headers["RateLimit-Policy"] == '"tenant";q=500;w=5'
    assert len(gateway.bridge.submitted) == 1
    r = await gateway.client.post("/api/v2/tasks", json={}, headers=tenant_headers(gateway))
    await problem(r, 400)
    assert r.headers["RateLimit-Policy"] == '"tenant";q=500;w=5'


async def raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    """Send raw HTTP/1.1 bytes; return the status and the whole response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    data = await reader.read(65536)
    writer.close()
    await writer.wait_closed()
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize("token", [b"\xff\xfe\xfd", b"lv_\xe2\x82\xac\xc3\xa9", b"\x80abc"])
async def test_undecodable_bearer_tokens_get_401(gateway: Gateway, token: bytes) -> None:
    port = gateway.client.server.port
    assert port is not None
    for path in (b"POST /api/v2/tasks", b"PUT /admin/v1/flags/x"):
        head = (
            path
            + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + token
            + b"\r\nX-Tenant-ID: acme\r\nIdempotency-Key: k\r\nContent-Length: 2\r\n"
            + b"Connection: close\r\n\r\n{}"
        )
        status, data = await raw_request(port, head)
        assert status == 401, data
        assert b"application/problem+json" in data


@pytest.mark.parametrize("mrr", [1e308, 1e10, -1, "NaN", "Infinity"])
async def test_huge_or_non_finite_mrr_is_refused(gateway: Gateway, mrr: Any) -> None:
    r = await gateway.client.put("/admin/v1/tenants/acme", json={"mrr": mrr}, headers=ADMIN)
    assert "mrr" in (await problem(r, 400))["detail"]


async def test_mrr_beyond_a_double_is_refused(gateway: Gateway) -> None:
    r = await gateway.client.put(
        "/admin/v1/tenants/acme",
        data=b'{"mrr": 1e400}',
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    await problem(r, 400)


@pytest.mark.parametrize("tenant_id", [".", "..", "-x", "a b", "x" * 129, "é"])
async def test_tenant_ids_outside_the_pattern_are_refused(gateway: Gateway, tenant_id: str) -> None:
    url = gateway.client.make_url("/admin/v1/tenants/").with_path(
        "/admin/v1/tenants/" + quote(tenant_id, safe="").replace(".", "%2E"), encoded=True
    )
    r = await gateway.client.session.put(url, json={"mrr": 1}, headers=ADMIN)
    assert (await problem(r, 400))["fields"] == ["tenantId"]
    assert len(gateway.bridge.published) == 2  # the fixture's tenant and key only


async def test_tenant_accepts_rate_limits(gateway: Gateway) -> None:
    body = {"mrr": 10, "rateLimitPerS": 2.5, "burst": 10}
    r = await gateway.client.put("/admin/v1/tenants/acme", json=body, headers=ADMIN)
    assert r.status == 200
    assert (await r.json())["burst"] == 10
    tenant = gateway.config.tenants["acme"]
    assert (tenant.rate_limit_per_s, tenant.burst) == (2.5, 10)
    assert len(tenant.api_key_hashes) == len(tenant.api_keys) == 1  # the key survives a PUT
    assert tenant_policy(tenant, Settings()) == '"tenant";q=10;w=4'
    for bad in ({"mrr": 1, "rateLimitPerS": 0}, {"mrr": 1, "burst": 0}):
        r = await gateway.client.put("/admin/v1/tenants/acme", json=bad, headers=ADMIN)
        await problem(r, 400)


async def test_bad_fractional_weights_are_refused(gateway: Gateway) -> None:
    flag = {
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"fractional": [["on", -5], ["off", 105]]},
    }
    r = await gateway.client.put("/admin/v1/flags/task-type.ANALYSIS", json=flag, headers=ADMIN)
    assert "fractional" in (await problem(r, 400))["detail"]


async def test_405_carries_allow(gateway: Gateway) -> None:
    r = await gateway.client.get("/api/v2/tasks")
    await problem(r, 405)
    assert r.headers["Allow"] == "POST"


async def test_api_keys_are_listed_without_secrets_and_revoked(gateway: Gateway) -> None:
    r = await gateway.client.post("/admin/v1/tenants/acme/api-keys", headers=ADMIN)
    created = await r.json()
    second = created["apiKey"]
    r = await gateway.client.get("/admin/v1/tenants/acme/api-keys", headers=ADMIN)
    listed = (await r.json())["apiKeys"]
    assert [k["last4"] for k in listed] == [gateway.api_key[-4:], second[-4:]]
    assert all(len(k["keyId"]) == 12 and k["createdAt"] for k in listed)
    text = await r.text()
    assert gateway.api_key not in text
    assert second not in text
    first_id = listed[0]["keyId"]
    r = await gateway.client.delete(f"/admin/v1/tenants/acme/api-keys/{first_id}", headers=ADMIN)
    assert r.status == 204
    assert gateway.config.tenant_for_api_key(gateway.api_key) is None
    assert gateway.config.tenant_for_api_key(second) is not None
    r = await gateway.client.delete(f"/admin/v1/tenants/acme/api-keys/{first_id}", headers=ADMIN)
    await problem(r, 404)
    r = await gateway.client.get("/admin/v1/tenants/nobody/api-keys", headers=ADMIN)
    await problem(r, 404)


def rate_limited_reply() -> Reply:
    decision = {
        "taskId": "t-1",
        "status": "rejected",
        "reason": "rate_limited",
        "httpStatus": 429,
        "detail": "over the tenant's rate limit",
        "retryAfterS": 2,
        "rateLimit": {"limit": 10, "remaining": 0, "resetS": 2, "windowS": 4},
    }
    return Reply(decision, replayed=False)


def test_rate_limited_decision_renders_429_with_ratelimit_headers() -> None:
    with pytest.raises(Problem) as caught:
        decision_response(rate_limited_reply(), "/api/v2/tasks/t-1", {}, taskId="t-1")
    assert caught.value.status_code == 429
    headers = caught.value.headers
    assert headers["Retry-After"] == "2"
    assert headers["RateLimit-Policy"] == '"tenant";q=10;w=4'
    assert headers["RateLimit"] == '"tenant";r=0;t=2'
    assert orjson.loads(caught.value.text or "")["title"] == "Too Many Requests"


async def test_status_shows_tenant_figures_only_to_those_allowed(gateway: Gateway) -> None:
    r = await gateway.client.get("/api/status")
    public = await r.json()
    assert set(public) == {"status", "healthScore", "broker", "breakers", "consumerLag"}
    headers = {"Authorization": f"Bearer {gateway.api_key}", "X-Tenant-ID": "acme"}
    r = await gateway.client.get("/api/status", headers=headers)
    assert (await r.json())["tenants"] == {"acme": {"mrr": 1000.0}}
    assert "workers" not in await r.json()
    r = await gateway.client.get("/api/status", headers=ADMIN)
    assert await r.json() == REPORT
    r = await gateway.client.get("/api/status", headers={**headers, "X-Tenant-ID": "globex"})
    await problem(r, 403)
    r = await gateway.client.get("/api/status", headers={"Authorization": "Bearer nope"})
    await problem(r, 401)
