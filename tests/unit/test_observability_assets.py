"""Operator assets stay valid: alert rules, Grafana dashboards, Prometheus and compose files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lapverse_streams.broker.kafka import pinned_kafka_version

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "grafana" / "alerts" / "lapverse-rules.yml"
RULE_TESTS = ROOT / "grafana" / "alerts" / "lapverse-rules.test.yml"
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.kafka.yml"
DATASOURCE_UID = "prometheus"

COUNTERS_AND_GAUGES = frozenset(
    {
        "lapverse_tasks_total",
        "lapverse_admission_decisions_total",
        "lapverse_idempotent_replays_total",
        "lapverse_budget_burn_rate",
        "lapverse_budget_remaining_ratio",
        "lapverse_spend_usd",
        "lapverse_reserved_usd",
        "lapverse_mrr_usd",
        "lapverse_dlq_total",
        "lapverse_consumer_lag",
        "lapverse_table_keys",
        "lapverse_http_requests_total",
        "lapverse_breaker_state",
        "lapverse_competitions_total",
        "lapverse_cost_per_competition",
        "lapverse_win_rate",
        "lapverse_variant_runs_total",
        "lapverse_variant_wins_total",
        "lapverse_champion_promotions_total",
    }
)
HISTOGRAMS = frozenset(
    {
        "lapverse_task_duration_ms",
        "lapverse_http_request_duration_seconds",
        "lapverse_variant_score",
    }
)
# A classic histogram is only queryable through its series, never by its bare name.
PRODUCT_SERIES = COUNTERS_AND_GAUGES | {
    f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")
}

_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, labels and keywords removed)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    return {m for m in _IDENTIFIER.findall(text) if m.lower() not in _KEYWORDS}


def as_promql(expr: str) -> str:
    """A dashboard expression with its Grafana variables replaced by plain PromQL."""
    for variable, value in _GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


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


def rules() -> list[dict[str, Any]]:
    """Every rule of the rules file."""
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    """Series names the recording rules define."""
    return {rule["record"] for rule in rules() if "record" in rule}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """All panels, including those folded into rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard's panels."""
    return [
        target["expr"]
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def test_promtool_checks_rules() -> None:
    run_promtool("check", "rules", RULES)


def test_promtool_rule_unit_tests_pass() -> None:
    run_promtool("test", "rules", RULE_TESTS)


def test_prometheus_config_is_valid_and_loads_the_rules(tmp_path: Path) -> None:
    # The config names its rules relative to itself, as the compose file mounts them.
    (tmp_path / "rules").mkdir()
    shutil.copy(RULES, tmp_path / "rules" / RULES.name)
    shutil.copy(PROMETHEUS_CONFIG, tmp_path / "prometheus.yml")
    run_promtool("check", "config", tmp_path / "prometheus.yml")

    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == [f"rules/{RULES.name}"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_sd = jobs["lapverse-worker"]["dns_sd_configs"][0]
    assert (worker_sd["names"], worker_sd["type"], worker_sd["port"]) == (["worker"], "A", 6066)
    assert jobs["lapverse-gateway"]["dns_sd_configs"][0]["port"] == 8080


def test_every_alert_has_severity_and_summary() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    assert len(alerts) >= 8
    for alert in alerts:
        assert alert.get("labels", {}).get("severity"), alert["alert"]
        assert alert.get("annotations", {}).get("summary"), alert["alert"]


def test_rules_only_select_product_metrics() -> None:
    allowed = PRODUCT_SERIES | recorded_names()
    for rule in rules():
        unknown = metric_names(rule["expr"]) - allowed
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown {unknown}"


def test_dashboard_set_is_complete() -> None:
    expected = {"tasks", "cost-margin", "slo-burn", "competitions", "breakers-kafka"}
    assert {path.stem for path in DASHBOARDS} == expected


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_is_valid_and_uses_the_provisioned_datasource(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"]
    assert dashboard["title"]
    all_panels = list(panels(dashboard))
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
    dashboard = json.loads(path.read_text())
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
    uids = [json.loads(path.read_text())["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_queries_only_select_product_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    allowed = PRODUCT_SERIES | recorded_names()
    for expr in dashboard_exprs(dashboard):
        unknown = metric_names(expr) - allowed
        assert not unknown, f"{expr}: unknown {unknown}"
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("definition", "")
        for metric in re.findall(r"label_values\(\s*([\w:]+)\s*,", query):
            assert metric in allowed, f"variable {variable['name']}: unknown {metric}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool has no expression parser of its own: check them as recording rules.
    exprs = [
        as_promql(expr)
        for path in DASHBOARDS
        for expr in dashboard_exprs(json.loads(path.read_text()))
    ]
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
