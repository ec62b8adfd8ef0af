"""Alerts hold together: rules, their promtool tests, runbooks, on-call page and Alertmanager."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboards import declared_series, metric_names

ROOT = Path(__file__).resolve().parents[2]
ALERTS_DIR = ROOT / "grafana" / "alerts"
# Evaluation order matters to promtool's tests: recording rules first.
RULE_FILES = [ALERTS_DIR / "lapverse-recording.yml", ALERTS_DIR / "lapverse-rules.yml"]
RULE_TESTS = sorted((ALERTS_DIR / "tests").glob("*.test.yml"))
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK_DIR = ROOT / "docs" / "runbooks"
ONCALL = ROOT / "docs" / "oncall.md"
RUNBOOK_URL = "https://github.com/lapverse/lapverse-streams/blob/main/docs/runbooks/{}.md"
RECEIVERS = {"page": "pager", "ticket": "tickets"}
RUNBOOK_SECTIONS = ("## What it means", "## How to check", "## What to do")
# Series Prometheus itself writes for every target it scrapes.
SCRAPE_SERIES = frozenset({"up"})


def load_yaml(path: Path) -> Any:
    """Parsed YAML document."""
    return yaml.safe_load(path.read_text())


@cache
def groups() -> tuple[dict[str, Any], ...]:
    """Every rule group, in the order of RULE_FILES."""
    return tuple(group for path in RULE_FILES for group in load_yaml(path)["groups"])


def alerts() -> list[dict[str, Any]]:
    """Every alerting rule."""
    return [rule for group in groups() for rule in group["rules"] if "alert" in rule]


def records() -> list[dict[str, Any]]:
    """Every recording rule."""
    return [rule for group in groups() for rule in group["rules"] if "record" in rule]


ALERTS = {rule["alert"]: rule for rule in alerts()}


@cache
def rule_tests() -> tuple[dict[str, Any], ...]:
    """Every promtool test case of every test file."""
    return tuple(case for path in RULE_TESTS for case in load_yaml(path)["tests"])


def run(tool: str, *args: str | Path) -> str:
    """Run an operator tool and fail with its output unless it succeeds; its stdout."""
    done = subprocess.run(
        [tool, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{tool} {' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"
    return done.stdout


def promtool() -> str:
    """Path of promtool; fails (never skips) when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: run `make tools` (scripts/ensure-tools.sh)")
    return path


def amtool() -> str:
    """Path of amtool; skips only when it is missing (`make test` installs it first)."""
    path = shutil.which("amtool")
    if path is None:
        pytest.skip(
            "amtool is missing from PATH, so the Alertmanager config is not checked: run "
            "`make tools` (scripts/ensure-tools.sh installs Debian's prometheus-alertmanager)"
        )
    return path


def test_rule_files_are_valid() -> None:
    run(promtool(), "check", "rules", *RULE_FILES)


def test_rule_unit_tests_pass() -> None:
    run(promtool(), "test", "rules", *RULE_TESTS)


def test_every_rule_file_is_loaded_by_prometheus_and_the_tests() -> None:
    assert sorted(ALERTS_DIR.glob("*.yml")) == sorted(RULE_FILES)
    expected = [f"../{path.name}" for path in RULE_FILES]
    for path in RULE_TESTS:
        assert load_yaml(path)["rule_files"] == expected, path.name


def test_prometheus_config_is_valid_and_loads_the_rules(tmp_path: Path) -> None:
    # The config names its rules relative to itself, as the compose file mounts them
    # (./grafana/alerts as /etc/prometheus/rules).
    (tmp_path / "rules").mkdir()
    for path in RULE_FILES:
        shutil.copy(path, tmp_path / "rules" / path.name)
    shutil.copy(PROMETHEUS_CONFIG, tmp_path / "prometheus.yml")
    run(promtool(), "check", "config", tmp_path / "prometheus.yml")

    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == [f"rules/{path.name}" for path in RULE_FILES]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_sd = jobs["lapverse-worker"]["dns_sd_configs"][0]
    assert (worker_sd["names"], worker_sd["type"], worker_sd["port"]) == (["worker"], "A", 6066)
    assert jobs["lapverse-gateway"]["dns_sd_configs"][0]["port"] == 8080


def test_tests_evaluate_recording_groups_before_alerting_groups() -> None:
    # Without group_eval_order promtool evaluates groups in any order, and an alert may read
    # the recorded series of the previous evaluation, or none.
    names = [group["name"] for group in groups()]
    for path in RULE_TESTS:
        assert load_yaml(path)["group_eval_order"] == names, path.name


def test_there_are_enough_alerts_and_their_names_are_unique() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) >= 25
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"Lapverse[A-Z][A-Za-z0-9]+", name) for name in names), names


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_severity_summary_description_and_runbook(name: str) -> None:
    rule = ALERTS[name]
    assert rule["labels"]["severity"] in RECEIVERS
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == RUNBOOK_URL.format(name)


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_runbook_exists_and_explains_the_alert(name: str) -> None:
    runbook = RUNBOOK_DIR / f"{name}.md"
    assert runbook.is_file(), f"missing {runbook.relative_to(ROOT)}"
    text = runbook.read_text()
    assert text.startswith(f"# {name}\n"), "the title is the alert name"
    for section in RUNBOOK_SECTIONS:
        assert section in text, section
    severity = ALERTS[name]["labels"]["severity"]
    assert f"Severity: **{severity}**" in text, "the severity the rule gives"
    rule = f"The rule:\n\n```promql\n{ALERTS[name]['expr'].strip()}\n```"
    assert rule in text, "the rule as it is in lapverse-rules.yml"
    how_to_check = text.split("## How to check", 1)[1]
    assert "```promql" in how_to_check, "a query to run"


def test_every_runbook_belongs_to_an_alert() -> None:
    assert {path.stem for path in RUNBOOK_DIR.glob("*.md")} == set(ALERTS)


def test_oncall_page_links_every_runbook() -> None:
    text = ONCALL.read_text()
    for name, rule in ALERTS.items():
        row = f"| [{name}](runbooks/{name}.md) | {rule['labels']['severity']} |"
        assert row in text, row


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_a_firing_case_and_a_quiet_case(name: str) -> None:
    cases = [
        check["exp_alerts"] or []
        for case in rule_tests()
        for check in case.get("alert_rule_test", [])
        if check["alertname"] == name
    ]
    assert any(cases), "no case where it fires"
    assert any(not expected for expected in cases), "no case where it stays quiet"


@pytest.mark.parametrize("record", sorted(rule["record"] for rule in records()))
def test_recording_rule_has_a_case(record: str) -> None:
    used = re.compile(rf"(?<![\w:]){re.escape(record)}(?![\w:])")
    exprs = [check["expr"] for case in rule_tests() for check in case.get("promql_expr_test", [])]
    assert any(used.search(expr) for expr in exprs)


def test_page_alerts_on_ratios_have_a_traffic_floor() -> None:
    # A ratio over a handful of requests is noise: pages also require a minimum count.
    for name, rule in ALERTS.items():
        ratio = "ratio" in rule["expr"] or "/" in rule["expr"]
        if rule["labels"]["severity"] == "page" and ratio:
            assert ">=" in rule["expr"], name


def test_rules_only_select_declared_series() -> None:
    known = declared_series() | {rule["record"] for rule in records()} | SCRAPE_SERIES
    for rule in [*records(), *alerts()]:
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown {unknown}"


def test_alertmanager_config_is_valid() -> None:
    run(amtool(), "check-config", ALERTMANAGER_CONFIG)


def route(*labels: str) -> str:
    """The receiver Alertmanager's routing tree picks for an alert with `labels`."""
    out = run(amtool(), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels)
    return out.strip()


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alertmanager_routes_the_alert_by_severity(name: str) -> None:
    severity = ALERTS[name]["labels"]["severity"]
    assert route(f"alertname={name}", f"severity={severity}", "tenant=acme") == RECEIVERS[severity]


def test_alertmanager_sends_an_alert_without_severity_to_tickets() -> None:
    assert route("alertname=SomethingNew") == "tickets"


def test_alertmanager_groups_by_alert_and_tenant() -> None:
    assert load_yaml(ALERTMANAGER_CONFIG)["route"]["group_by"] == ["alertname", "tenant"]


def test_inhibit_rules_name_existing_alerts() -> None:
    matcher = re.compile(r'^\s*alertname\s*(=~|=)\s*"([^"]*)"\s*$')
    for rule in load_yaml(ALERTMANAGER_CONFIG)["inhibit_rules"]:
        for text in [*rule["source_matchers"], *rule["target_matchers"]]:
            found = matcher.match(text)
            if found:
                names = found.group(2).split("|") if found.group(1) == "=~" else [found.group(2)]
                assert set(names) <= set(ALERTS), text


def test_the_local_prometheus_config_loads_every_rule_file_and_scrapes_make_run() -> None:
    local = PROMETHEUS_CONFIG.parent / "local.yml"
    run(promtool(), "check", "config", local)
    config = load_yaml(local)
    assert config["rule_files"] == [f"../../grafana/alerts/{path.name}" for path in RULE_FILES]
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets == {
        "lapverse-worker": ["127.0.0.1:6066"],
        "lapverse-gateway": ["127.0.0.1:8080"],
    }
