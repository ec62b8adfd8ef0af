"""The dashboards conform to Grafana's own dashboard schema, and a broken one is refused.

The schema is the npm package @grafana/schema: the TypeScript form of the dashboard kind and
panel plugin schemas Grafana is built from (generated from its CUE). tools/grafana-schema/
check.mjs has the TypeScript compiler type-check each dashboard file against it: the dashboard,
its variables, rows and panels, each panel's options and field config against its plugin's
schema (stat, timeseries, table, ...), enum values, types, required fields and unknown keys.
The PyPI package grafana-foundation-sdk was the other candidate, but its
`Dashboard.from_json` only decodes: a title of 5, a schemaVersion of "abc", a gridPos height
of "x" and unknown keys all load without a word, so it validates nothing.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.dashboards import DASHBOARD_DIR, DASHBOARDS, ROOT, load

CHECK = ROOT / "tools" / "grafana-schema" / "check.sh"

Dashboard = dict[str, Any]


def check(*paths: Path) -> subprocess.CompletedProcess[str]:
    """Run the schema check on dashboard files; fails (never skips) without Node.js."""
    done = subprocess.run(
        ["bash", str(CHECK), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode == 2:
        pytest.fail(f"the schema check could not run:\n{done.stdout}{done.stderr}")
    return done


def first(dashboard: Dashboard, panel_type: str) -> dict[str, Any]:
    """The dashboard's first panel of a type."""
    return next(p for p in dashboard["panels"] if p["type"] == panel_type)


def set_option(panel_type: str, key: str, value: Any) -> Callable[[Dashboard], None]:
    """A mutation setting one option of the first panel of a type."""
    return lambda d: first(d, panel_type)["options"].__setitem__(key, value)


# (name, mutation of tasks.json, what the check must say about it)
MUTATIONS: list[tuple[str, Callable[[Dashboard], None], str]] = [
    ("misspelled-option-value", set_option("stat", "colorMode", "backgroud"), '"backgroud"'),
    ("unknown-option", set_option("timeseries", "legnd", {}), '"legnd"'),
    (
        "grid-height-as-text",
        lambda d: first(d, "stat")["gridPos"].__setitem__("h", "4"),
        "not assignable to type 'number'",
    ),
    ("unknown-panel-type", lambda d: first(d, "stat").__setitem__("type", "stats"), '"stats"'),
    ("tooltip-out-of-range", lambda d: d.__setitem__("graphTooltip", 7), "'7'"),
    ("no-schema-version", lambda d: d.pop("schemaVersion"), "schemaVersion"),
]


def test_dashboards_conform_to_grafana_schema() -> None:
    done = check(*DASHBOARDS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(DASHBOARDS)} dashboard(s) checked, 0 problem(s)" in done.stdout


def test_broken_copies_of_a_dashboard_are_refused(tmp_path: Path) -> None:
    original = load(DASHBOARD_DIR / "tasks.json")
    copies = {}
    for name, mutate, _ in MUTATIONS:
        broken = copy.deepcopy(original)
        mutate(broken)
        copies[name] = tmp_path / f"{name}.json"
        copies[name].write_text(json.dumps(broken, indent=2))
    done = check(*copies.values())
    assert done.returncode == 1, done.stdout + done.stderr
    reported = done.stdout.splitlines()
    for name, _, expected in MUTATIONS:
        mine = [line for line in reported if line.startswith(f"{copies[name]}:")]
        assert any(expected in line for line in mine), f"{name}: {mine or done.stdout}"
