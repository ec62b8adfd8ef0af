"""`lapverse run`: embedded broker, worker, gateway and a demo tenant, in one command."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import orjson

from lapverse_streams.broker.embedded import die_with_parent, port_is_open, stop_process
from lapverse_streams.broker.engines import Broker, embedded_broker
from lapverse_streams.broker.topics import ensure_topics
from lapverse_streams.settings import Settings
from lapverse_streams.standins.process import spawn_standin
from lapverse_streams.variants.forecast import demo_input

DEMO_TENANT = "acme"
DEMO_TASK = {
    "type": "ANALYSIS",
    "priority": "high",
    "description": "Record growth and strong gains",
    "tenant": DEMO_TENANT,
    "platforms": ["twitter"],
    "costCenter": "marketing",
    "requirements": {"complexity": "advanced"},
}


def run_all(settings: Settings) -> int:
    """Start everything, create the demo tenant, print how to use it, stop all on Ctrl-C."""
    logs = Path(settings.data_dir)
    logs.mkdir(parents=True, exist_ok=True)
    host, port = settings.broker_host_port
    broker: Broker | None = None
    if host in ("127.0.0.1", "localhost") and not port_is_open(host, port):
        engine = settings.embedded_broker
        if engine == "tansu" and settings.processing_guarantee == "exactly_once":
            print(
                "LAPVERSE_PROCESSING_GUARANTEE=exactly_once needs Kafka transactions, which "
                "Tansu does not have: set LAPVERSE_EMBEDDED_BROKER=kafka",
                file=sys.stderr,
            )
            return 2
        broker = embedded_broker(engine, port, host, log_path=logs / "broker.log")
        broker.start()
        name = "Apache Kafka" if engine == "kafka" else "Tansu"
        print(f"embedded {name} broker on {broker.url} (pid {broker.pid})", flush=True)
    admin_token = settings.admin_token or secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "LAPVERSE_ADMIN_TOKEN": admin_token,
        "LAPVERSE_BROKER_URL": settings.broker_url,
        "LAPVERSE_PARENT_PID": str(os.getpid()),
    }
    children: list[subprocess.Popen[bytes]] = []
    standins: list[subprocess.Popen[bytes]] = []
    try:
        for kind, url in (("news-ai", settings.news_ai_url), ("share-api", settings.share_api_url)):
            parsed = urlparse(url)
            host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
            if host in ("127.0.0.1", "localhost") and not port_is_open(host, port):
                standins.append(spawn_standin(kind, host, port, logs / f"{kind}.log"))
                print(f"{kind} stand-in on {url} (PUT {url}/control sets latency and failures)")
        asyncio.run(ensure_topics(settings))
        for role in ("worker", "gateway"):
            with (logs / f"{role}.log").open("ab") as out:
                command = [sys.executable, "-m", "lapverse_streams.cli", role]
                # own session: a terminal's Ctrl-C reaches only us, and we stop them in order;
                # if we are killed outright, they get SIGTERM and watch LAPVERSE_PARENT_PID
                children.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        stdout=out,
                        stderr=out,
                        start_new_session=True,
                        preexec_fn=die_with_parent,  # noqa: PLW1509
                    )
                )
        asyncio.run(serve_demo(settings, admin_token, logs))
        return 0
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        for standin in standins:
            stop_process(standin)
        if broker:
            broker.stop()
        print("stopped", flush=True)


async def serve_demo(settings: Settings, admin_token: str, logs: Path) -> None:
    """Create the demo tenant once everything is ready, print the welcome, wait for Ctrl-C."""
    base = f"http://{settings.gateway_host}:{settings.gateway_port}"
    api_key = await create_demo_tenant(base, admin_token)
    await wait_ready(f"http://{settings.worker_web_host}:{settings.worker_web_port}/readyz")
    demo_round = logs / "demo-competition.json"
    demo_round.write_bytes(orjson.dumps(demo_competition(), option=orjson.OPT_INDENT_2))
    print_welcome(settings, base, admin_token, api_key, logs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def create_demo_tenant(base: str, admin_token: str, timeout_s: float = 90) -> str:
    """Wait for the gateway, then create tenant acme and an API key for it."""
    auth = {"Authorization": f"Bearer {admin_token}"}
    async with aiohttp.ClientSession() as session:
        await wait_ready(f"{base}/readyz", timeout_s)
        tenant = {"mrr": 1000.0, "sloTarget": 0.99, "owner": "data-team"}
        async with session.put(
            f"{base}/admin/v1/tenants/{DEMO_TENANT}", json=tenant, headers=auth
        ) as r:
            r.raise_for_status()
        async with session.post(
            f"{base}/admin/v1/tenants/{DEMO_TENANT}/api-keys", headers=auth
        ) as r:
            r.raise_for_status()
            body = await r.json()
            return str(body["apiKey"])


async def wait_ready(url: str, timeout_s: float = 90) -> None:
    """Poll a /readyz URL until it answers 200."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout_s}s; see .lapverse/*.log")
            await asyncio.sleep(0.3)


def demo_competition() -> dict[str, object]:
    """A self-compete round on the demo series (monthly airline passengers, 1949-1960)."""
    return {
        "content": "Forecast next year's monthly airline passengers",
        "platforms": ["twitter"],
        "priority": "high",
        "costCenter": "forecasting",
        "input": demo_input(),
    }


def print_welcome(
    settings: Settings, base: str, admin_token: str, api_key: str, logs: Path
) -> None:
    """The URLs, the secrets of this run and a first request."""
    print(
        f"""
LapVerse Streams is running.
  gateway      {base}   (OpenAPI: {base}/openapi.yaml, metrics: {base}/metrics)
  worker       http://{settings.worker_web_host}:{settings.worker_web_port}/metrics
  broker       {settings.broker_url}
  logs         {logs}/
  admin token  {admin_token}
  tenant       {DEMO_TENANT}, API key {api_key}

Try:
  export KEY={api_key}
  curl -s -X POST {base}/api/v2/tasks \\
    -H "Authorization: Bearer $KEY" -H "X-Tenant-ID: {DEMO_TENANT}" \\
    -H "Idempotency-Key: demo-1" -H "Content-Type: application/json" \\
    -d '{orjson.dumps(DEMO_TASK).decode()}'

A self-compete round: four forecasting strategies on the airline-passengers series
  curl -s -X POST {base}/api/v2/self-compete \\
    -H "Authorization: Bearer $KEY" -H "X-Tenant-ID: {DEMO_TENANT}" \\
    -H "Idempotency-Key: round-1" -H "Content-Type: application/json" \\
    -d @{logs}/demo-competition.json
  curl -s {base}/api/v2/self-compete/<competitionId> \\
    -H "Authorization: Bearer $KEY" -H "X-Tenant-ID: {DEMO_TENANT}"

Ctrl-C stops everything.""",
        flush=True,
    )
