"""Sample a process with py-spy and summarise where its time goes."""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from bench.procs import Child, spawn

_LINE_NUMBER = re.compile(r":\d+\)$")
_SITE = re.compile(r"\([^()]*site-packages/")


def py_spy_path() -> str:
    """The py-spy executable next to this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
    return found


async def record(target: Child, output: Path, work_dir: Path) -> Child:
    """Start sampling target into output (collapsed stacks); stop it with SIGINT."""
    argv = [py_spy_path(), "record", "--pid", str(target.pid), "--format", "raw"]
    argv += ["--rate", "100", "--nonblocking", "--output", str(output)]
    return await spawn("py-spy", argv, {}, work_dir)


def summarise(collapsed: Path, top: int = 15) -> str:
    """Top functions by self and by inclusive samples, from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_SITE.sub("(", _LINE_NUMBER.sub(")", f)) for f in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if total == 0:
        return "no samples"
    lines = [f"{total} samples"]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        lines.append(f"top {top} by {title} time:")
        lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines)
