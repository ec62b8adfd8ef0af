"""Killing `lapverse run` outright leaves no broker, worker, gateway or stand-in behind."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.launch import start_run

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> dict[int, str]:
    """Live direct children of `pid` and their command names, from /proc."""
    children: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :]
            state, ppid = rest.split()[:2]
            if int(ppid) == pid and state != "Z":
                children[int(stat.parent.name)] = name
    return children


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2] != "Z"


def test_children_exit_when_lapverse_run_is_killed(tmp_path: Path) -> None:
    launcher = start_run(tmp_path / "data")
    children: dict[int, str] = {}
    try:
        assert launcher.stdout is not None
        deadline = time.monotonic() + 150
        printed = ""
        while "Ctrl-C stops everything" not in printed and time.monotonic() < deadline:
            line = launcher.stdout.readline()
            if not line:
                break
            printed += line
        assert "Ctrl-C stops everything" in printed, printed
        children = children_of(launcher.pid)
        # the broker (tansu, or java for Apache Kafka), two stand-ins, the worker and the gateway
        assert len(children) == 5, children
        assert {"tansu", "java"} & set(children.values()), children

        launcher.kill()
        launcher.wait(10)
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert {pid: name for pid, name in children.items() if alive(pid)} == {}
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(10)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
