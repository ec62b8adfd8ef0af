"""The docs stay in step with the code: Mermaid blocks, `make help`, topic names."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from lapverse_streams.domain.batch import REDRIVEN, REPLAYED, REPLY_ONLY, REQUEST_ID
from lapverse_streams.events import topics
from lapverse_streams.events.deadletter import Consumed, letter

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
VIEWS = (ROOT / "docs" / "c4.md", ROOT / "docs" / "sequences.md")
MAKEFILE = ROOT / "Makefile"
# Mermaid's diagram keywords: the first word of every diagram.
DIAGRAM_TYPES = frozenset(
    {
        "flowchart",
        "graph",
        "sequenceDiagram",
        "classDiagram",
        "stateDiagram",
        "stateDiagram-v2",
        "erDiagram",
        "journey",
        "gantt",
        "pie",
        "quadrantChart",
        "requirementDiagram",
        "gitGraph",
        "C4Context",
        "C4Container",
        "C4Component",
        "C4Dynamic",
        "C4Deployment",
        "mindmap",
        "timeline",
        "sankey-beta",
        "xychart-beta",
        "block-beta",
        "packet-beta",
        "architecture-beta",
        "kanban",
        "radar-beta",
    }
)
FENCE = re.compile(r"^```mermaid[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NAME = re.compile(r"lapverse-[a-z0-9]+(?:-[a-z0-9]+)*")


def mermaid_blocks(path: Path) -> list[str]:
    """The bodies of the file's ```mermaid blocks; fails on one left open."""
    text = path.read_text()
    blocks = FENCE.findall(text)
    opened = len(re.findall(r"^```mermaid", text, re.MULTILINE))
    assert len(blocks) == opened, f"{path.name}: a ```mermaid block is not closed"
    return blocks


def diagram_type(block: str) -> str:
    """The first word of a block, after any front matter, directives and comments."""
    lines = iter(block.splitlines())
    for line in lines:
        stripped = line.strip()
        if stripped == "---":  # front matter runs to the next ---
            for inner in lines:
                if inner.strip() == "---":
                    break
            continue
        if not stripped or stripped.startswith("%%"):
            continue
        return stripped.split()[0]
    return ""


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_mermaid_block_starts_with_a_known_diagram_type(path: Path) -> None:
    for number, block in enumerate(mermaid_blocks(path), 1):
        kind = diagram_type(block)
        assert kind in DIAGRAM_TYPES, f"{path.name}, block {number}: unknown type {kind!r}"


@pytest.mark.parametrize("path", VIEWS, ids=lambda p: p.name)
def test_the_views_are_drawn(path: Path) -> None:
    assert mermaid_blocks(path), f"{path.name} has no Mermaid diagram"


def phony_targets() -> list[str]:
    """The targets the Makefile declares .PHONY, in order (continuation lines joined)."""
    text = MAKEFILE.read_text().replace("\\\n", " ")
    declared = re.findall(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    return [name for line in declared for name in line.split()]


def make_help(tmp_path: Path) -> str:
    """`make -s help`, with a Python that fails and no venv, so installing would fail it."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    absent = tmp_path / "no-venv"
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "help", "PY=false", f"VENV={absent}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not absent.exists(), "make help created a virtual environment"
    return result.stdout


def test_make_help_describes_every_target_in_one_line(tmp_path: Path) -> None:
    phony = phony_targets()
    assert phony[0] == "help"
    rules = re.findall(r"^([a-z][a-z0-9-]*):(?!=)", MAKEFILE.read_text(), re.MULTILINE)
    described = {}
    for line in make_help(tmp_path).splitlines():
        name, _, description = line.strip().partition(" ")
        described[name] = description.strip()
    for target in [*phony, *rules]:
        assert described.get(target), f"`make help` has no line for {target!r}"


def allowed_names() -> frozenset[str]:
    """Names starting lapverse- that are not topics: the Kafka headers the code writes."""
    dead = letter("doc", Consumed("t", 0, 0, None, None, []), "empty", "")
    headers = {name for name, _ in dead.headers}
    return frozenset({REQUEST_ID, REPLAYED, REDRIVEN, REPLY_ONLY, *headers})


@pytest.mark.parametrize("path", VIEWS, ids=lambda p: p.name)
def test_topic_names_in_the_views_exist(path: Path) -> None:
    mentioned = set(NAME.findall(path.read_text()))
    unknown = mentioned - set(topics.ALL) - allowed_names()
    assert not unknown, f"{path.name} names topics that topics.py does not: {sorted(unknown)}"
    assert mentioned & set(topics.ALL), f"{path.name} names no topic"


def test_the_container_view_shows_every_topic() -> None:
    mentioned = set(NAME.findall(VIEWS[0].read_text()))
    missing = set(topics.ALL) - mentioned
    assert not missing, f"c4.md leaves out {sorted(missing)}"
