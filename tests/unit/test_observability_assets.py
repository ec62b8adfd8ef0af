"""Operator assets stay valid: Grafana dashboards and the compose file (alerts: test_alerts.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lapverse_streams.broker.kafka import pinned_kafka_version
from tests import dashboards
from tests.dashboards import DASHBOARDS, metric_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.kafka.yml"
DATASOURCE_UID = "prometheus"


def promtool() -> str:
    """Path of promtool; fails (never skips) when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: run `make tools` (scripts/ensure-tools.sh)")
    return path


def run_promtool(*args: str | Path) -> None:
    """Run promtool and fail with its output unless it succeeds."""
    done = subprocess.run(
        [promtool(), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"


def load_yaml(path: Path) -> Any:
    """Parsed YAML document."""
    return yaml.safe_load(path.read_text())


def test_dashboard_set_is_complete() -> None:
    expected = {"tasks", "cost-margin", "slo-burn", "competitions", "breakers-kafka"}
    assert {path.stem for path in DASHBOARDS} == expected


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_is_valid_and_uses_the_provisioned_datasource(path: Path) -> None:
    dashboard = dashboards.load(path)
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"]
    assert dashboard["title"]
    all_panels = list(dashboards.panels(dashboard))
    assert all_panels, "no panels"
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in all_panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", {}).get("uid") == DATASOURCE_UID, panel["title"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DATASOURCE_UID, variable["name"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_panels_do_not_overlap(path: Path) -> None:
    dashboard = dashboards.load(path)
    boxes = [(panel["title"], panel["gridPos"]) for panel in dashboard.get("panels", [])]
    for title, grid in boxes:
        assert grid["x"] >= 0, title
        assert grid["x"] + grid["w"] <= 24, title
    for i, (title_a, a) in enumerate(boxes):
        for title_b, b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"{title_a!r} overlaps {title_b!r}"


def test_dashboard_uids_are_unique() -> None:
    uids = [dashboards.load(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids))


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every label_values selector of a dashboard."""
    values = dashboards.all_values(path)
    queries = [
        (f"{t.panel!r} {t.ref_id}", dashboards.as_promql(t.expr, values))
        for t in dashboards.targets(path)
    ]
    for variable in dashboards.variable_queries(path):
        parsed = dashboards.label_values(variable.query)
        assert parsed, f"variable {variable.name}: only label_values(...) is used: {variable.query}"
        if parsed[0]:
            queries.append((f"variable {variable.name}", dashboards.as_promql(parsed[0], values)))
    return queries


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_queries_only_select_declared_series(path: Path) -> None:
    # Declared by the code (lapverse_streams/observability/metrics.py and prometheus_client's
    # collectors), not by a list kept here; tests/integration/test_dashboards_live.py checks
    # that the running processes emit them and that every target has data.
    known = dashboards.declared_series() | dashboards.recorded_names()
    known |= dashboards.PROMETHEUS_SERIES
    unknown = {
        where: sorted(metric_names(query) - known) for where, query in dashboard_queries(path)
    }
    assert not {where: names for where, names in unknown.items() if names}


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool has no expression parser of its own: check them as recording rules.
    exprs = [query for path in DASHBOARDS for _, query in dashboard_queries(path)]
    group = {
        "name": "dashboard-queries",
        "rules": [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)],
    }
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [group]}))
    run_promtool("check", "rules", rules_file)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (type, le) (rate(lapverse_task_duration_ms_bucket{type=~"$t"}[5m]))',
            {"lapverse_task_duration_ms_bucket"},
        ),
        (
            "lapverse:task_error_ratio:rate1h > (14.4 * 0.01) and on (tenant) bogus_total",
            {"lapverse:task_error_ratio:rate1h", "bogus_total"},
        ),
        (
            "abs(max(lapverse_win_rate) - max(lapverse_win_rate offset 1d)) > 0.2",
            {"lapverse_win_rate"},
        ),
        ("count(up == 0) or vector(0)", {"up"}),
    ],
)
def test_metric_names_finds_every_selected_series(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_compose_file_defines_the_stack() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert {"kafka", "worker", "gateway", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"] == f"apache/kafka:{pinned_kafka_version()}"
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    # `--scale worker=N` needs copies that do not collide on a name or a host port.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]
    assert "8080:8080" in services["gateway"]["ports"]
    assert "127.0.0.1:9090:9090" in services["prometheus"]["ports"]
    assert "127.0.0.1:3000:3000" in services["grafana"]["ports"]
