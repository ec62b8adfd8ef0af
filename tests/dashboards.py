"""The Grafana dashboards as data: panels, PromQL targets, variables and the series they select."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from lapverse_streams.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))
RULE_FILES = sorted((ROOT / "grafana" / "alerts").glob("*.yml"))  # recording and alerting
# Series Prometheus writes itself for its alerting rules; no exporter emits them.
PROMETHEUS_SERIES = frozenset({"ALERTS", "ALERTS_FOR_STATE"})
# Grafana's own variables, as a dashboard opened on its default time range would resolve them.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
# The series names a metric family of each type is scraped as.
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel, as written in the dashboard file."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str


@dataclass(frozen=True)
class VariableQuery:
    """The query that lists a template variable's values."""

    dashboard: str
    name: str
    query: str


def load(path: Path) -> dict[str, Any]:
    """A dashboard file, parsed."""
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """All panels, including those folded into rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(path: Path) -> list[Target]:
    """Every PromQL target of a dashboard's panels."""
    return [
        Target(path.stem, panel.get("title", ""), target.get("refId", ""), target["expr"])
        for panel in panels(load(path))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def variable_queries(path: Path) -> list[VariableQuery]:
    """The queries of a dashboard's query variables."""
    found = []
    for variable in load(path).get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query", "")
        text = query.get("query", "") if isinstance(query, dict) else str(query)
        found.append(VariableQuery(path.stem, variable["name"], text))
    return found


def all_values(path: Path) -> dict[str, str]:
    """What each of a dashboard's variables stands for with "All" selected."""
    return {
        variable["name"]: variable.get("allValue") or ".*"
        for variable in load(path).get("templating", {}).get("list", [])
    }


def as_promql(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with Grafana's variables and the dashboard's (from `values`) substituted.

    Raises KeyError naming a variable that is neither.
    """

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        known = {**GRAFANA_VARIABLES, **values}
        if name not in known:
            raise KeyError(f"unknown variable ${name}")
        return known[name]

    return _VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, labels and keywords removed)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    text = _VARIABLE.sub(" ", text)
    return {m for m in _IDENTIFIER.findall(text) if m.lower() not in _KEYWORDS}


def label_values(query: str) -> tuple[str | None, str] | None:
    """(series selector or None, label) of `label_values(...)`, or None for another query."""
    match = _LABEL_VALUES.match(query)
    return (match.group(1), match.group(2)) if match else None


def recorded_names() -> set[str]:
    """Series names the recording rules define."""
    groups = [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def declared_series() -> set[str]:
    """Series names a LapVerse process can expose: its Metrics, and prometheus_client's
    process, GC and platform collectors."""
    standard = CollectorRegistry()
    for collector in (ProcessCollector, GCCollector, PlatformCollector):
        collector(registry=standard)
    families = [*Metrics().registry.collect(), *standard.collect()]
    return {family.name + suffix for family in families for suffix in SERIES_SUFFIXES[family.type]}
