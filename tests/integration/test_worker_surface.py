"""The worker's HTTP surface and logs: loopback, three paths, broker-aware readiness, JSON."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from faust.web import base as faust_web
from mode.utils.imports import symbol_by_name

from agents.app import create_worker
from agents.web import PATHS
from lapverse_streams.broker.embedded import free_port
from lapverse_streams.broker.engines import embedded_broker
from lapverse_streams.broker.topics import ensure_topics
from lapverse_streams.settings import Settings
from tests.conftest import ENGINE, Stack
from tests.integration.helpers import create_tenant, post_task, task_body, wait_task

WORKER_HOST = "127.0.0.2"  # not the default, to prove the setting reaches the socket
TENANT = "surface"
IDEMPOTENCY_KEY = "idem-7f3c-secret-order-42"
BASIC = "Basic " + base64.b64encode(b"ops:hunter2-basic").decode()
COOKIE = "session=c00kie-s3cret"
STRIPE_KEY = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
API_KEY = "lv_" + "Qw3_-e" * 7 + "r"  # 43 url-safe characters
SECRETS = (BASIC.split()[1], "c00kie-s3cret", STRIPE_KEY, API_KEY)
# Runs the worker as `lapverse worker` does, and logs secrets once Faust has set up logging.
WORKER_WITH_SECRETS = f"""
import logging, sys, threading, time, urllib.request

from lapverse_streams.cli import main


def log_secrets_once_ready() -> None:
    while True:
        try:
            with urllib.request.urlopen(sys.argv[1], timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.2)
    log = logging.getLogger("lapverse.test.secrets")
    log.warning(
        "calling the share api with %s",
        "Authorization: {BASIC}",
        extra={{"headers": {{"AUTHORIZATION": {BASIC!r}, "Cookie": {COOKIE!r}}},
               "note": "keys {STRIPE_KEY} {API_KEY}", "request": {{"set-cookie": "x"}}}},
    )
    print("stray print Cookie: {COOKIE} Bearer {API_KEY}")
    log.warning("secrets logged")


threading.Thread(target=log_secrets_once_ready, daemon=True).start()
sys.exit(main(["worker"]))
"""


def get(url: str) -> tuple[int, bytes]:
    """GET `url`; the status and body, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_status(url: str, status: int, timeout_s: float) -> bytes:
    """Poll `url` until it answers `status`; its body."""
    deadline = time.monotonic() + timeout_s
    seen: tuple[int, bytes] | None = None
    while time.monotonic() < deadline:
        try:
            seen = get(url)
        except OSError:
            seen = None
        if seen is not None and seen[0] == status:
            return seen[1]
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered {status}; last {seen}")


def listening_hosts(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port` (Linux /proc, little-endian)."""
    hosts: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address)
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            hosts.add(str(ipaddress.ip_address(words)))
    return hosts


def faust_paths(tables: list[str], keys: list[str]) -> set[str]:
    """Every page Faust's built-in blueprints define, with table names and keys filled in."""
    paths = {"/", "/stats/", "/assignment/", "/graph/", "/performance/", "/router/", "/table/"}
    builtins = [
        *faust_web.DEFAULT_BLUEPRINTS,
        *faust_web.PRODUCTION_BLUEPRINTS,
        *faust_web.DEBUG_BLUEPRINTS,
        *faust_web.OPTIONAL_BLUEPRINTS,
    ]
    for prefix, reference in builtins:
        for route in symbol_by_name(reference).routes:
            for table in tables:
                for key in keys:
                    uri = route.uri.replace("{name}", table).replace("{key}", key)
                    paths.add(prefix + uri)
    return paths | {path.rstrip("/") for path in paths if path != "/"}


@pytest.fixture(scope="module")
def surface(stack_factory: Callable[..., Stack]) -> Iterator[Stack]:
    """A gateway and a worker on 127.0.0.2 that logs secrets once it is ready."""
    stack = stack_factory(LAPVERSE_WORKER_WEB_HOST=WORKER_HOST)
    stack.start("gateway")
    ready_url = f"http://{WORKER_HOST}:{stack.settings.worker_web_port}/readyz"
    with (stack.logs / "worker.log").open("ab") as out:
        stack.processes["worker"] = subprocess.Popen(
            [sys.executable, "-c", WORKER_WITH_SECRETS, ready_url],
            env=stack.env,
            stdout=out,
            stderr=out,
        )
    stack.wait_ready("gateway")
    wait_status(ready_url, 200, 90)
    yield stack
    stack.stop()


def test_only_our_three_paths_are_registered(tmp_path: Path) -> None:
    worker = create_worker(Settings(data_dir=str(tmp_path)))
    worker.app.web.init_server()
    routes = {resource.canonical for resource in worker.app.web.web_app.router.resources()}
    assert routes == PATHS
    assert worker.app.conf.web_bind == "127.0.0.1"


@pytest.mark.kafka
def test_worker_listens_on_the_configured_host_only(surface: Stack) -> None:
    port = surface.settings.worker_web_port
    assert listening_hosts(port) == {WORKER_HOST}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.kafka
def test_no_faust_page_and_no_table_content_is_served(surface: Stack) -> None:
    asyncio.run(submit_and_finish_a_task(surface))
    base = f"http://{WORKER_HOST}:{surface.settings.worker_web_port}"
    prefix = surface.settings.topic_prefix
    tables = [
        name for table in ("dedup", "ledger", "burn", "rounds") for name in (table, prefix + table)
    ]
    probed = faust_paths(tables, [TENANT, IDEMPOTENCY_KEY]) | PATHS
    answers = {path: get(base + path) for path in sorted(probed)}

    assert {path for path, (status, _) in answers.items() if status != 404} == PATHS
    for path, (_, body) in answers.items():
        assert IDEMPOTENCY_KEY.encode() not in body, path
        assert b"cost" not in body or path == "/metrics", path


async def submit_and_finish_a_task(stack: Stack) -> None:
    """Leave a dedup entry and a ledger charge in the worker's tables."""
    async with aiohttp.ClientSession() as session:
        key = await create_tenant(session, stack, TENANT)
        status, _, raw = await post_task(
            session, stack, key, TENANT, task_body(TENANT), key=IDEMPOTENCY_KEY
        )
        assert status == 202, raw
        await wait_task(session, stack, key, TENANT, orjson.loads(raw)["taskId"])


@pytest.mark.kafka
def test_worker_logs_are_json_lines_with_secrets_redacted(surface: Stack) -> None:
    log_path = surface.logs / "worker.log"
    deadline = time.monotonic() + 30
    while "secrets logged" not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    text = log_path.read_text()
    assert "secrets logged" in text

    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    assert {line["service"] for line in lines} == {"lapverse-worker"}
    assert any(line["logger"].startswith(("faust", "mode", "aiokafka")) for line in lines)
    for secret in SECRETS:
        assert secret not in text
    (logged,) = [line for line in lines if line["message"].startswith("calling the share api")]
    assert logged["headers"] == {"AUTHORIZATION": "[REDACTED]", "Cookie": "[REDACTED]"}
    assert logged["request"] == {"set-cookie": "[REDACTED]"}
    assert logged["message"] == "calling the share api with Authorization: Basic [REDACTED]"
    (printed,) = [line for line in lines if "stray print" in line["message"]]
    assert printed["message"].startswith("stray print Cookie: [REDACTED]")


@pytest.mark.kafka
def test_readyz_is_503_within_seconds_of_losing_the_broker(tmp_path: Path) -> None:
    broker = embedded_broker(ENGINE, free_port(), log_path=tmp_path / f"{ENGINE}.log")
    broker.start()
    env: dict[str, Any] = {
        **os.environ,
        "LAPVERSE_BROKER_URL": broker.url,
        "LAPVERSE_WORKER_WEB_PORT": str(free_port()),
        "LAPVERSE_TOPIC_PARTITIONS": "2",
        "LAPVERSE_DATA_DIR": str(tmp_path / "data"),
    }
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("LAPVERSE_")})
    stack = Stack(settings, env, tmp_path)
    try:
        asyncio.run(ensure_topics(settings))
        stack.start("worker")
        stack.wait_ready("worker")
        broker.stop()
        lost_at = time.monotonic()
        body = wait_status(f"http://127.0.0.1:{settings.worker_web_port}/readyz", 503, 15)
        assert orjson.loads(body) == {"ready": False, "broker": False}
        assert time.monotonic() - lost_at < 15
    finally:
        stack.stop()
        broker.stop()
