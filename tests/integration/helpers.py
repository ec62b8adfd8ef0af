"""Small clients for integration tests: HTTP calls, topic reads, ledger state."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from lapverse_streams.broker.assign import assign_all, at_fetch_highwater
from lapverse_streams.settings import Settings
from tests.conftest import ADMIN_TOKEN, Stack

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def create_tenant(
    session: aiohttp.ClientSession, stack: Stack, tenant_id: str, **body: Any
) -> str:
    """PUT the tenant and return a fresh API key for it."""
    tenant = {"mrr": 1000.0, "sloTarget": 0.99, "owner": "qa", **body}
    async with session.put(
        f"{stack.base_url}/admin/v1/tenants/{tenant_id}", json=tenant, headers=ADMIN
    ) as r:
        assert r.status in (200, 201), await r.text()
    async with session.post(
        f"{stack.base_url}/admin/v1/tenants/{tenant_id}/api-keys", headers=ADMIN
    ) as r:
        assert r.status == 201
        return str((await r.json())["apiKey"])


def task_body(tenant: str, **overrides: Any) -> dict[str, Any]:
    """A valid task request body."""
    return {
        "type": "ANALYSIS",
        "priority": "high",
        "description": "Record growth and strong gains",
        "tenant": tenant,
        "platforms": ["twitter"],
        "costCenter": "marketing",
        "requirements": {"complexity": "simple"},
        **overrides,
    }


async def post_task(
    session: aiohttp.ClientSession,
    stack: Stack,
    api_key: str,
    tenant: str,
    body: Any,
    key: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST /api/v2/tasks; returns status, headers and raw body."""
    headers = {
        "Authorization": f"Bearer {api_key}",
        "X-Tenant-ID": tenant,
        "Idempotency-Key": key or uuid.uuid4().hex,
    }
    async with session.post(f"{stack.base_url}/api/v2/tasks", json=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


async def wait_task(
    session: aiohttp.ClientSession,
    stack: Stack,
    api_key: str,
    tenant: str,
    task_id: str,
    done: tuple[str, ...] = ("completed", "failed"),
    timeout_s: float = 30,
) -> dict[str, Any]:
    """Poll GET /api/v2/tasks/{id} until it reaches one of `done`."""
    headers = {"Authorization": f"Bearer {api_key}", "X-Tenant-ID": tenant}
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with session.get(f"{stack.base_url}/api/v2/tasks/{task_id}", headers=headers) as r:
            if r.status == 200:
                body = await r.json()
                if body["status"] in done:
                    return body
        await asyncio.sleep(0.1)
    raise TimeoutError(f"task {task_id} never reached {done}: {body}")


async def read_topic(
    settings: Settings, topic: str, until: Callable[[list[Any]], bool], timeout_s: float = 30
) -> list[Any]:
    """Read a topic from the beginning (all partitions, no group) until `until(records)`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=settings.isolation_level,  # under exactly once: committed records only
    )
    await consumer.start()
    try:
        name = settings.topic(topic) if not topic.startswith(settings.topic_prefix) else topic
        partitions = await assign_all(consumer, [name])
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while not until(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: condition not met with {len(records)} records")
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def ledger_of(
    settings: Settings, tenant: str, app_id: str = "lapverse-streams"
) -> dict[str, Any]:
    """The tenant's ledger as the worker last wrote it to its changelogs.

    `reserved` is derived as the worker derives it: the tenant's dedup records whose last
    changelog value is still `accepted` (domain/state.py), each with its estimate.
    """
    prefix = f"{settings.topic_prefix}{app_id}"
    last: dict[bytes, Any] = {}
    for r in await drain(settings, f"{prefix}-dedup-changelog"):
        last[r.key] = None if r.value is None else orjson.loads(r.value)
    records = await drain(settings, f"{prefix}-ledger-changelog")
    key = orjson.dumps(tenant)
    values = [r.value for r in records if r.key == key]
    ledger: dict[str, Any] = orjson.loads(values[-1]) if values else {}
    reserved = {
        v["request_id"]: v["estimate"]
        for v in last.values()
        if v is not None and v["tenant"] == tenant and v["status"] == "accepted"
    }
    return {**ledger, "reserved": reserved} if values or reserved else {}


def distinct(field: str, at_least: int) -> Callable[[list[Any]], bool]:
    """A `read_topic` condition: at least `at_least` different values of `data[field]`."""

    def enough(records: list[Any]) -> bool:
        return len({orjson.loads(r.value)["data"][field] for r in records}) >= at_least

    return enough


async def settled_ledger(settings: Settings, tenant: str, timeout_s: float = 30) -> dict[str, Any]:
    """The tenant's ledger once it has spent, holds no reservation and stays so (or at the
    deadline): the dedup and ledger changelogs are read one after the other, so one read
    may see a settlement's dedup write and not yet its ledger write."""
    deadline = time.monotonic() + timeout_s
    ledger: dict[str, Any] = {}
    previous: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        ledger = await ledger_of(settings, tenant)
        if ledger.get("spend") and not ledger["reserved"] and ledger == previous:
            break
        previous = ledger
        await asyncio.sleep(0.5)
    return ledger


async def drain(settings: Settings, topic: str) -> list[Any]:
    """Every record currently in a topic (full name)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=settings.isolation_level,  # under exactly once: committed records only
    )
    await consumer.start()
    try:
        partitions = await assign_all(consumer, [topic])
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        while True:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            if await at_fetch_highwater(consumer, partitions):
                return records
    finally:
        await consumer.stop()


async def produce_raw(
    settings: Settings, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> None:
    """Write (key, value) records straight to a topic (short name), as any producer could."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(settings.topic(topic), value, key=key)
    finally:
        await producer.stop()


async def start_round(
    session: aiohttp.ClientSession, stack: Stack, api_key: str, tenant: str, body: Any
) -> str:
    """POST /api/v2/self-compete with a fresh Idempotency-Key; returns the competition id."""
    headers = {
        "Authorization": f"Bearer {api_key}",
        "X-Tenant-ID": tenant,
        "Idempotency-Key": uuid.uuid4().hex,
    }
    async with session.post(
        f"{stack.base_url}/api/v2/self-compete", json=body, headers=headers
    ) as r:
        assert r.status == 202, await r.text()
        return str((await r.json())["competitionId"])


async def wait_round_completed(
    session: aiohttp.ClientSession,
    stack: Stack,
    api_key: str,
    tenant: str,
    round_id: str,
    timeout_s: float = 60,
) -> dict[str, Any]:
    """Poll GET /api/v2/self-compete/{id} until the round is completed."""
    headers = {"Authorization": f"Bearer {api_key}", "X-Tenant-ID": tenant}
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with session.get(
            f"{stack.base_url}/api/v2/self-compete/{round_id}", headers=headers
        ) as r:
            if r.status == 200:
                body = await r.json()
                if body["status"] == "completed":
                    return body
        await asyncio.sleep(0.2)
    raise TimeoutError(f"round {round_id} never completed: {body}")


@contextlib.contextmanager
def prometheus_server(home: Path, config: dict[str, Any], port: int) -> Iterator[None]:
    """A real Prometheus (Debian's package) with `config`, on `port`, its data under `home`."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run `make tools`"
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    command = [
        binary,
        f"--config.file={home / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with (home / "prometheus.log").open("ab") as log:
        server = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        yield
    finally:
        server.terminate()
        server.wait(20)
