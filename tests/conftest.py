"""Shared fixtures: a session broker on a free port, and real worker/gateway processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lapverse_streams.broker.embedded import free_port, stop_process
from lapverse_streams.broker.engines import Broker, embedded_broker
from lapverse_streams.broker.topics import ensure_topics
from lapverse_streams.settings import Settings
from lapverse_streams.standins.process import spawn_standin

ADMIN_TOKEN = "test-admin-token"


ENGINE = Settings.from_env().embedded_broker  # LAPVERSE_EMBEDDED_BROKER: tansu or kafka


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One embedded broker for the whole session, of the engine LAPVERSE_EMBEDDED_BROKER names."""
    log = tmp_path_factory.mktemp("broker") / f"{ENGINE}.log"
    with embedded_broker(ENGINE, free_port(), log_path=log) as running:
        yield running


@pytest.fixture(scope="session")
def standins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """News AI and Share API stand-ins on free ports: the settings that point at them."""
    logs = tmp_path_factory.mktemp("standins")
    news_port, share_port = free_port(), free_port()
    news = spawn_standin("news-ai", "127.0.0.1", news_port, logs / "news-ai.log")
    share = spawn_standin("share-api", "127.0.0.1", share_port, logs / "share-api.log")
    yield {
        "LAPVERSE_NEWS_AI_URL": f"http://127.0.0.1:{news_port}",
        "LAPVERSE_SHARE_API_URL": f"http://127.0.0.1:{share_port}",
    }
    stop_process(news)
    stop_process(share)


@dataclass
class Stack:
    """A worker and a gateway process on their own topic prefix and consumer group."""

    settings: Settings
    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # each process's HTTP port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway_port}"

    def start(self, role: str, name: str = "", **overrides: str) -> subprocess.Popen[bytes]:
        """Start `lapverse <role>` as its own process, known as `name` (default: the role)."""
        name = name or role
        env = {**self.env, **overrides}
        out = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "lapverse_streams.cli", role],
            env=env,
            stdout=out,
            stderr=out,
        )
        out.close()
        self.processes[name] = process
        port = env["LAPVERSE_GATEWAY_PORT" if role == "gateway" else "LAPVERSE_WORKER_WEB_PORT"]
        self.ports[name] = int(port)
        return process

    def up(self) -> Stack:
        """Start the worker and the gateway and wait until both are ready."""
        self.start("worker")
        self.start("gateway")
        self.wait_ready("gateway")
        self.wait_ready("worker")
        return self

    def kill(self, name: str) -> None:
        """SIGKILL a process, as a crash would."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        """Stop every process of the stack by its pid."""
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes.clear()

    def wait_ready(self, name: str, timeout_s: float = 90) -> None:
        """Poll a process's /readyz (the gateway's or a worker's) until it answers 200."""
        port = self.ports[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/readyz", timeout=1
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready; logs in {self.logs}")


@pytest.fixture(scope="module")
def stack_factory(
    broker: Broker,
    standins: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Stack]]:
    """Builds stacks with a fresh topic prefix (hence consumer group); stops them all at the end."""
    stacks: list[Stack] = []

    def make(**overrides: str) -> Stack:
        prefix = f"t{uuid.uuid4().hex[:8]}."
        env = {
            **os.environ,
            "LAPVERSE_BROKER_URL": broker.url,
            "LAPVERSE_TOPIC_PREFIX": prefix,
            "LAPVERSE_GATEWAY_PORT": str(free_port()),
            "LAPVERSE_WORKER_WEB_PORT": str(free_port()),
            "LAPVERSE_ADMIN_TOKEN": ADMIN_TOKEN,
            "LAPVERSE_TOPIC_PARTITIONS": "2",
            "LAPVERSE_RETRY_BASE_MS": "10",
            "LAPVERSE_LOG_LEVEL": "INFO",
            "LAPVERSE_DRILLS_ENABLED": "true",  # the drills use CHAOS tasks
            **standins,
            **overrides,
        }
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("LAPVERSE_")})
        asyncio.run(ensure_topics(settings))
        stack = Stack(settings, env, tmp_path_factory.mktemp(prefix.rstrip(".")))
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    """A running worker and gateway, ready to serve."""
    return stack_factory().up()
