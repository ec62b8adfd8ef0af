"""Child processes under test: started with a log file, stopped by pid, never left behind."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lapverse_streams.broker.embedded import free_port
from lapverse_streams.settings import Settings

_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it when the benchmark dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Child:
    """A started process and when it started."""

    name: str
    process: asyncio.subprocess.Process
    started_at: float  # time.monotonic()
    started_ms: int  # wall clock
    log_path: Path

    @property
    def pid(self) -> int:
        """Process id."""
        return self.process.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.returncode is None

    def cpu_s(self) -> float | None:
        """User + system CPU seconds used so far (None once it has exited)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


async def spawn(name: str, argv: list[str], env: dict[str, str], work_dir: Path) -> Child:
    """Start a process in work_dir with stdout and stderr going to work_dir/<name>.log."""
    log_path = work_dir / f"{name}.log"
    with log_path.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=work_dir,
            preexec_fn=_die_with_parent,
        )
    return Child(name, process, time.monotonic(), time.time_ns() // 1_000_000, log_path)


async def spawn_worker(
    settings: Settings, name: str, work_dir: Path, instance_id: str = "", web_port: int = 0
) -> Child:
    """A `lapverse worker` on settings' broker and prefix, with a free web port by default."""
    env = {
        **os.environ,
        "LAPVERSE_BROKER_URL": settings.broker_url,
        "LAPVERSE_TOPIC_PREFIX": settings.topic_prefix,
        "LAPVERSE_WORKER_WEB_PORT": str(web_port or free_port()),
        "LAPVERSE_LOG_LEVEL": "WARNING",
        "LAPVERSE_WORKER_INSTANCE_ID": instance_id,
        "LAPVERSE_PROCESSING_GUARANTEE": settings.processing_guarantee,
    }
    # cwd is work_dir so Faust's data directory does not land in the repository.
    return await spawn(
        name, [sys.executable, "-m", "lapverse_streams.cli", "worker"], env, work_dir
    )


async def spawn_gateway(settings: Settings, admin_token: str, work_dir: Path) -> Child:
    """A `lapverse gateway` on settings' broker, prefix and gateway port, with an admin token."""
    env = {
        **os.environ,
        "LAPVERSE_BROKER_URL": settings.broker_url,
        "LAPVERSE_TOPIC_PREFIX": settings.topic_prefix,
        "LAPVERSE_GATEWAY_PORT": str(settings.gateway_port),
        "LAPVERSE_ADMIN_TOKEN": admin_token,
        "LAPVERSE_LOG_LEVEL": "WARNING",
        "LAPVERSE_PROCESSING_GUARANTEE": settings.processing_guarantee,
    }
    argv = [sys.executable, "-m", "lapverse_streams.cli", "gateway"]
    return await spawn("gateway", argv, env, work_dir)


async def stop(child: Child, grace_s: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """Send sig (SIGTERM), then SIGKILL after grace_s."""
    if not child.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(child.pid, sig)
    try:
        await asyncio.wait_for(child.process.wait(), grace_s)
    except TimeoutError:
        await kill(child)


async def kill(child: Child, timeout_s: float = 10.0) -> None:
    """SIGKILL and reap."""
    if child.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
    await asyncio.wait_for(child.process.wait(), timeout_s)
