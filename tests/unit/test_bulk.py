"""POST /api/v2/tasks:batch without Kafka: envelope and item validation, answers per task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator

from lapverse_streams.config_view import ConfigView
from lapverse_streams.domain import idempotency
from lapverse_streams.domain.batch import REQUEST_ID
from lapverse_streams.events.codec import header
from lapverse_streams.gateway.admin import AdminRoutes
from lapverse_streams.gateway.bridge import BrokerUnavailable, Reply, Request
from lapverse_streams.gateway.bulk import (
    MAX_BATCH_TASKS,
    BulkRoutes,
    batch_items,
    decision_wait_s,
    item_key,
)
from lapverse_streams.gateway.problems import Problem
from lapverse_streams.gateway.routes import Routes
from lapverse_streams.gateway.server import METRICS, SETTINGS, problems_and_metrics
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.settings import Settings
from tests.unit.test_gateway_limits import FakeBridge

ADMIN = {"Authorization": "Bearer unit-admin-token"}
OPENAPI_PATH = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"
Outcome = Reply | BrokerUnavailable | None


class ScriptedBridge(FakeBridge):
    """A fake bridge whose batch writes answer from a script keyed by idempotency key."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.script: dict[str, Outcome] = {}
        self.written: list[list[dict[str, Any]]] = []
        self.down = False
        self.hold: asyncio.Event | None = None  # when given, the next batch write waits for it
        self.writing = asyncio.Event()  # set by the first batch write
        self.waits: list[float] = []  # how long each batch write would wait for decisions

    async def submit_many(
        self, topic: str, key: bytes, requests: Sequence[Request], wait_s: float
    ) -> list[Outcome]:
        if self.down:
            raise BrokerUnavailable("broker down")
        events = [orjson.loads(r.value) for r in requests]
        assert all(header(r.headers, REQUEST_ID) == r.request_id for r in requests)
        self.written.append(events)
        self.waits.append(wait_s)
        self.writing.set()
        hold, self.hold = self.hold, None
        if hold is not None:
            await hold.wait()
        return [self.script.get(e["id"]) for e in events]


def decision(key: str, status: str = "accepted", http_status: int = 202, **extra: Any) -> Reply:
    task_id = idempotency.task_id("acme", key)
    data = {
        "taskId": task_id,
        "status": status,
        "reason": extra.pop("reason", status),
        "httpStatus": http_status,
        "detail": extra.pop("detail", status),
        "costEstimateMicros": 10_000,
        "tags": {"tenantId": "acme"},
        **extra,
    }
    return Reply(data, replayed=False)


@dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    bridge: ScriptedBridge
    headers: dict[str, str]

    async def post(self, body: Any) -> tuple[int, Any]:
        r = await self.client.post("/api/v2/tasks:batch", json=body, headers=self.headers)
        return r.status, orjson.loads(await r.read())


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = Settings(admin_token="unit-admin-token", data_dir=str(tmp_path))
    config, bridge = ConfigView(settings), ScriptedBridge(settings)
    routes, admin = Routes(settings, config, bridge), AdminRoutes(settings, config, bridge)
    app = web.Application(
        middlewares=[problems_and_metrics], client_max_size=settings.max_body_bytes
    )
    app[SETTINGS], app[METRICS] = settings, Metrics()
    app.router.add_post("/api/v2/tasks:batch", BulkRoutes(routes).post)
    app.router.add_put("/admin/v1/tenants/{tenant_id}", admin.put_tenant)
    app.router.add_post("/admin/v1/tenants/{tenant_id}/api-keys", admin.post_api_key)
    async with TestClient(TestServer(app)) as client:
        r = await client.put("/admin/v1/tenants/acme", json={"mrr": 1000}, headers=ADMIN)
        assert r.status == 201, await r.text()
        r = await client.post("/admin/v1/tenants/acme/api-keys", headers=ADMIN)
        api_key = (await r.json())["apiKey"]
        headers = {"Authorization": f"Bearer {api_key}", "X-Tenant-ID": "acme"}
        yield Gateway(client, bridge, headers)


def task(key: str, **fields: Any) -> dict[str, Any]:
    return {"idempotencyKey": key, "type": "ANALYSIS", "costCenter": "ops", **fields}


# ---------------------------------------------------------------- the envelope


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"tasks": []}, "JSON array"),
        ("x", "JSON array"),
        ([], "1 to 100"),
        ([task(f"k{i}") for i in range(MAX_BATCH_TASKS + 1)], "not 101"),
        ([task("a"), task("b"), task("a")], "repeated: 'a'"),
    ],
)
def test_a_malformed_envelope_is_one_400(body: Any, words: str) -> None:
    with pytest.raises(Problem) as caught:
        batch_items(body)
    assert caught.value.status_code == 400
    assert words in caught.value.details["detail"]


def test_keys_that_are_not_strings_never_count_as_duplicates() -> None:
    items = [task("a"), {"idempotencyKey": ["a"]}, {"idempotencyKey": ["a"]}, 7, task("b")]
    assert batch_items(items) == items


@pytest.mark.parametrize(
    ("item", "detail"),
    [
        ({"type": "ANALYSIS"}, "idempotencyKey is required"),
        (task(""), "idempotencyKey is required"),
        (task("k" * 256), "longer than 255"),
        (task("a\x00b"), "printable"),
        (task(12), "must be a string"),  # type: ignore[arg-type]
        ("a task", "JSON object"),
    ],
)
def test_an_unusable_item_key_is_a_400_naming_the_field(item: Any, detail: str) -> None:
    with pytest.raises(Problem) as caught:
        item_key(item)
    assert caught.value.status_code == 400
    assert detail in caught.value.details["detail"]
    assert caught.value.details["fields"] in (["idempotencyKey"], ["body"])


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [
        (None, (3.0, False)),
        ("respond-async", (0.0, True)),
        ("wait=1", (1.0, False)),
        ("handling=lenient, wait=10", (3.0, False)),
        ("wait=0, respond-async", (0.0, True)),
        ("wait=-1, wait=x, wait=99999999999, =, ,", (3.0, False)),
    ],
)
def test_prefer_shortens_the_wait_for_decisions(
    prefer: str | None, expected: tuple[float, bool]
) -> None:
    assert decision_wait_s(prefer, 3.0) == expected


# ---------------------------------------------------------------- answers per task


async def test_each_task_gets_the_answer_a_single_post_would(gateway: Gateway) -> None:
    gateway.bridge.script = {
        "ok": decision("ok"),
        "again": Reply(decision("again").data, replayed=True),
        "poor": decision("poor", "rejected", 402, reason="margin_exceeded", detail="over"),
        "busy": decision(
            "busy",
            "rejected",
            429,
            reason="rate_limited",
            detail="slow down",
            retryAfterS=2,
            rateLimit={"limit": 10, "remaining": 0, "resetS": 2, "windowS": 4},
        ),
        "late": None,
        "lost": BrokerUnavailable("no acknowledgement in time"),
    }
    body = [
        task("ok"),
        task("again"),
        task("poor"),
        task("bad", priority="urgent", requirements={"complexity": 3}),
        task("busy"),
        task("late", requirements={"complexity": "expert"}),
        task("other", tenant="globex"),
        task("typo", type="ANALYSYS"),
        task("lost"),
    ]
    status, out = await gateway.post(body)
    assert status == 207
    results = {r["idempotencyKey"]: r for r in out["results"]}
    assert [r["idempotencyKey"] for r in out["results"]] == [t["idempotencyKey"] for t in body]
    assert {k: r["status"] for k, r in results.items()} == {
        "ok": 202, "again": 202, "poor": 402, "bad": 400, "busy": 429, "late": 202,
        "other": 403, "typo": 400, "lost": 503,
    }  # fmt: skip
    ok = results["ok"]
    assert ok["body"] == {
        "taskId": idempotency.task_id("acme", "ok"),
        "status": "accepted",
        "costEstimate": 0.01,
        "tags": {"tenantId": "acme"},
    }
    assert ok["headers"] == {"Location": f"/api/v2/tasks/{ok['body']['taskId']}"}
    assert ok["replayed"] is False
    assert results["again"]["replayed"] is True
    assert results["again"]["headers"]["Idempotent-Replayed"] == "true"
    poor = results["poor"]["body"]
    assert poor["type"].endswith("/margin-exceeded")
    assert (poor["status"], poor["taskId"]) == (402, idempotency.task_id("acme", "poor"))
    assert results["bad"]["body"]["fields"] == ["priority", "requirements.complexity"]
    assert results["busy"]["headers"]["Retry-After"] == "2"
    assert results["busy"]["headers"]["RateLimit"] == '"tenant";r=0;t=2'
    assert results["late"]["body"]["status"] == "pending"
    assert results["late"]["body"]["costEstimate"] == 0.08
    assert results["other"]["body"]["type"].endswith("/wrong-tenant")
    assert results["typo"]["body"]["fields"] == ["type"]
    assert results["lost"]["headers"]["Retry-After"] == "5"
    # One write for the batch, holding exactly the valid tasks, in order, keyed as sent.
    [written] = gateway.bridge.written
    assert [e["id"] for e in written] == ["ok", "again", "poor", "busy", "late", "lost"]
    assert {e["data"]["tags"]["costCenter"] for e in written} == {"ops"}
    assert all(e["subject"] == "acme" for e in written)


async def test_a_key_still_being_decided_is_a_409_for_that_task_only(gateway: Gateway) -> None:
    gateway.bridge.hold = release = asyncio.Event()
    first = asyncio.create_task(gateway.post([task("slow")]))
    await gateway.bridge.writing.wait()
    status, out = await gateway.post([task("slow"), task("fast")])
    assert status == 207
    assert [r["status"] for r in out["results"]] == [409, 202]
    assert out["results"][0]["body"]["type"].endswith("/request-in-progress")
    release.set()
    assert (await first)[0] == 207
    status, out = await gateway.post([task("slow")])  # decided: the key is free again
    assert out["results"][0]["status"] == 202


async def test_respond_async_answers_once_written(gateway: Gateway) -> None:
    r = await gateway.client.post(
        "/api/v2/tasks:batch",
        json=[task("now")],
        headers={**gateway.headers, "Prefer": "respond-async"},
    )
    assert r.status == 207
    assert r.headers["Preference-Applied"] == "respond-async"
    assert (await r.json())["results"][0]["body"]["status"] == "pending"
    assert gateway.bridge.waits == [0.0]


async def test_a_batch_of_only_invalid_tasks_writes_nothing(gateway: Gateway) -> None:
    status, out = await gateway.post([{"type": "ANALYSIS"}, task("x", type="")])
    assert status == 207
    assert [r["status"] for r in out["results"]] == [400, 400]
    assert out["results"][0]["idempotencyKey"] is None
    assert gateway.bridge.written == []


async def test_broker_down_is_one_503_and_nothing_is_accepted(gateway: Gateway) -> None:
    gateway.bridge.down = True
    r = await gateway.client.post(
        "/api/v2/tasks:batch", json=[task("a"), task("b")], headers=gateway.headers
    )
    assert r.status == 503
    assert r.headers["Retry-After"] == "5"
    assert r.content_type == "application/problem+json"
    assert "RateLimit-Policy" in r.headers


async def test_auth_body_and_envelope_errors_answer_for_the_whole_request(
    gateway: Gateway,
) -> None:
    url = "/api/v2/tasks:batch"
    client, good = gateway.client, gateway.headers
    cases = [
        ({"X-Tenant-ID": "acme"}, [task("a")], 401),
        ({**good, "X-Tenant-ID": "globex"}, [task("a")], 403),
        (good, {"tasks": [task("a")]}, 400),
        (good, [task("a"), task("a")], 400),
    ]
    for headers, body, expected in cases:
        r = await client.post(url, json=body, headers=headers)
        assert r.status == expected, await r.text()
        assert r.content_type == "application/problem+json"
    big = b"[" + b'"x",' * 40_000 + b"1]"
    r = await client.post(url, data=big, headers={**good, "Content-Type": "application/json"})
    assert r.status == 413
    assert gateway.bridge.written == []


# ---------------------------------------------------------------- the documented shape


def test_real_answers_match_the_documented_schema() -> None:
    doc = yaml.safe_load(OPENAPI_PATH.read_text())
    schemas = doc["components"]["schemas"]
    task_fields = set(schemas["TaskRequest"]["properties"])
    assert set(schemas["BatchTask"]["properties"]) == task_fields | {"idempotencyKey"}
    operation = doc["paths"]["/api/v2/tasks:batch"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["maxItems"] == 100
    validator = Draft202012Validator(
        {"$ref": "#/components/schemas/BatchResults", "components": doc["components"]}
    )
    accepted = {"taskId": idempotency.task_id("acme", "k"), "status": "accepted",
                "costEstimate": 0.01, "tags": {"application": "a", "environment": "e",
                "tenantId": "acme", "costCenter": "c", "owner": "o", "version": "1"}}  # fmt: skip
    problem = Problem(400, "invalid-body", "type: missing", fields=["type"]).details
    results = {
        "results": [
            {"idempotencyKey": "k", "status": 202, "replayed": False,
             "headers": {"Location": "/api/v2/tasks/x"}, "body": accepted},
            {"idempotencyKey": None, "status": 400, "replayed": False, "headers": {},
             "body": problem},
        ]
    }  # fmt: skip
    assert [e.message for e in validator.iter_errors(results)] == []
