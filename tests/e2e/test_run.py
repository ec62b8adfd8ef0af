"""`lapverse run` as a new user starts it: the printed curl commands work as printed."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.launch import start_run

pytestmark = pytest.mark.e2e


@pytest.fixture
def welcome(tmp_path: Path) -> Iterator[str]:
    """Start `lapverse run` on free ports and return what it printed once ready."""
    proc = start_run(tmp_path / "data")
    printed: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(printed)
        assert "Ctrl-C stops everything" in text, text
        yield text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def curl_commands(welcome: str) -> list[list[str]]:
    """The printed curl commands, continuation lines joined, $KEY substituted."""
    key = re.search(r"export KEY=(\S+)", welcome)
    assert key is not None
    joined = welcome.replace("\\\n", " ")
    commands = [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]
    return [shlex.split(c.replace("$KEY", key.group(1))) for c in commands]


def test_printed_task_and_competition_examples_work(welcome: str) -> None:
    task, submit, status = curl_commands(welcome)
    accepted = json.loads(subprocess.run(task, capture_output=True, check=True, timeout=30).stdout)
    assert accepted["status"] == "accepted", accepted
    submitted = json.loads(
        subprocess.run(submit, capture_output=True, check=True, timeout=30).stdout
    )
    assert submitted["status"] == "running", submitted
    status = [part.replace("<competitionId>", submitted["competitionId"]) for part in status]
    deadline = time.monotonic() + 60
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        body = json.loads(subprocess.run(status, capture_output=True, check=True).stdout)
        if body["status"] == "completed":
            break
        time.sleep(0.5)
    assert body["status"] == "completed", body
    assert body["champion"] == "conservative"
    assert isinstance(body["scores"], dict)
    assert len(body["scores"]) == 4
    assert body["posts"][0]["fallback"] is False  # published through the Share API stand-in
