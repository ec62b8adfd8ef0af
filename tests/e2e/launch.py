"""Start `lapverse run` as a user does, on free ports, with its own data directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lapverse_streams.broker.embedded import free_port


def start_run(data_dir: Path) -> subprocess.Popen[str]:
    """`lapverse run` in its own session, stdout and stderr merged into one text pipe."""
    env = {
        **os.environ,
        "LAPVERSE_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
        "LAPVERSE_GATEWAY_PORT": str(free_port()),
        "LAPVERSE_WORKER_WEB_PORT": str(free_port()),
        "LAPVERSE_DATA_DIR": str(data_dir),
        "LAPVERSE_NEWS_AI_URL": f"http://127.0.0.1:{free_port()}",
        "LAPVERSE_SHARE_API_URL": f"http://127.0.0.1:{free_port()}",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "lapverse_streams.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
