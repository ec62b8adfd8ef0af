"""Stand-ins as child processes, for `lapverse run` and the test session."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lapverse_streams.broker.embedded import die_with_parent, port_is_open


def spawn_standin(
    kind: str, host: str, port: int, log_path: Path, timeout_s: float = 15.0
) -> subprocess.Popen[bytes]:
    """Start `python -m lapverse_streams.standins <kind>` and wait until its port accepts."""
    with log_path.open("ab") as log:
        command = [sys.executable, "-m", "lapverse_streams.standins", kind]
        process = subprocess.Popen(
            [*command, "--host", host, "--port", str(port)],
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
    deadline = time.monotonic() + timeout_s
    while not port_is_open(host, port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{kind} stand-in did not start on {host}:{port}; see {log_path}")
        time.sleep(0.05)
    return process
