"""The headline figures of `make bench`: each a median of repetitions, its spread, its target."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KAFKA = "kafka"


@dataclass(frozen=True)
class Figure:
    """One row of the table: where its values come from, its unit and the spec's target."""

    key: str  # its name in results.json "figures"
    label: str
    unit: str  # "/s", "ms", "s" or "" (a ratio)
    target: float | None = None
    at_most: bool = False  # the target is a ceiling (latency, recovery), else a floor
    engine: str | None = None  # the engine the target is stated for (None: every engine)

    def verdict(self, median: float | None, engine: str) -> str:
        """pass / FAIL against the target; "" without a target (or on another engine)."""
        if self.target is None or (self.engine is not None and self.engine != engine):
            return ""
        if median is None:
            return ""
        met = median <= self.target if self.at_most else median >= self.target
        return "pass" if met else "FAIL"

    def target_text(self) -> str:
        """The target as the table shows it, e.g. `>= 0.35` or `<= 50 ms (kafka)`."""
        if self.target is None:
            return ""
        sign = "<=" if self.at_most else ">="
        where = f" ({self.engine})" if self.engine else ""
        return f"{sign} {self.target:,g}{' ' + self.unit if self.unit else ''}{where}"


# Figures of phases A-G, read from each repetition's result document by key: the admission
# figures head the table, the others follow the gateway's.
ADMISSION_FIGURES = (
    Figure("raw_loop_per_s", "raw aiokafka loop", "/s"),
    Figure("admitted_per_s", "admission: dedup + ledger + burn", "/s"),
    Figure("ratio_faust_over_raw", "admission / raw loop", "", 0.35),
    Figure("io_floor_per_s", "admission's reads + writes, no logic", "/s"),
    Figure("ratio_io_floor_over_raw", "  that / raw loop: the shape's ceiling", ""),
    Figure("ratio_faust_over_io_floor", "admission / its reads + writes", ""),
)
PHASE_FIGURES = (
    Figure("completed_per_s", "executor completions", "/s"),
    Figure("io_floor_completed_per_s", "  the same, reads + writes with no logic", "/s"),
    Figure("competitions_completed_per_s", "competitions (self-compete rounds)", "/s"),
    Figure("recovery_s", "recovery: SIGKILL restart -> decision", "s", 5.0, True, KAFKA),
    Figure("recovery_new_request_s", "recovery: -> a request sent after the kill", "s"),
    Figure("graceful_restart_longest_gap_s", "graceful restart: longest gap", "s"),
    Figure("admitted_per_s_two_workers", "admission, two workers", "/s"),
    Figure("admitted_per_s_exactly_once", "admission, exactly once", "/s"),
    Figure("ratio_exactly_once_over_at_least_once", "exactly once / at least once", ""),
    Figure("worker_startup_s", "worker startup -> first decision", "s"),
)
LATENCY_TARGET_RATE = 500.0
LATENCY_TARGET_P99_MS = 50.0
BULK_TARGET_PER_S = 5000.0


def latency_figures(rate: float) -> list[Figure]:
    """Gateway latency at one open-loop rate; the spec's target is p99 at 500 req/s."""
    target = LATENCY_TARGET_P99_MS if rate == LATENCY_TARGET_RATE else None
    return [
        Figure(
            f"gateway_{q}_ms_at_{rate:g}",
            f"gateway {q} at {rate:g} req/s",
            "ms",
            target if q == "p99" else None,
            at_most=True,
        )
        for q in ("p50", "p90", "p99", "max")
    ]


LATENCY = Figure("gateway_latency", "gateway latency", "ms")  # the row when it was not run
BULK = Figure("bulk_tasks_per_s", "bulk ingestion over HTTP", "/s", BULK_TARGET_PER_S)


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Median, min, max and count of the values that are there."""
    there = [v for v in values if v is not None]
    if not there:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(there),
        "min": min(there),
        "max": max(there),
        "n": len(there),
    }


def summarise(
    repetitions: Sequence[dict[str, Any]],
    latency: dict[str, Any] | None,
    bulk: dict[str, Any] | None,
    engine: str,
) -> dict[str, dict[str, Any]]:
    """Every headline figure: spread over the repetitions, target, verdict; missing ones noted.

    `latency` is bench/latency.py's result for this engine, `bulk` bench/bulk.py's JSON
    (with at least `tasks_per_s: {median, min, max}`); either may be None when not run.
    """
    rows: list[tuple[Figure, dict[str, Any]]] = [
        (f, spread([r.get(f.key) for r in repetitions])) for f in ADMISSION_FIGURES
    ]
    if not latency:
        rows.append((LATENCY, spread([])))
    for entry in latency["figures"] if latency else ():
        rate = float(entry["rate_per_s"])
        for figure in latency_figures(rate):
            q = figure.key.split("_")[1]
            values = [rep["latency_ms"][q] for rep in entry["repetitions"]]
            rows.append((figure, spread(values)))
    per_s = (bulk or {}).get("tasks_per_s")
    if isinstance(per_s, dict):
        rows.append((BULK, {k: per_s.get(k) for k in ("median", "min", "max")} | {"n": None}))
    else:
        rows.append((BULK, spread([])))
    rows += [(f, spread([r.get(f.key) for r in repetitions])) for f in PHASE_FIGURES]
    return {
        f.key: {
            "label": f.label,
            "unit": f.unit,
            **values,
            "target": f.target_text() or None,
            "verdict": f.verdict(values["median"], engine) or None,
        }
        for f, values in rows
    }


def table(figures: dict[str, dict[str, Any]], notes: dict[str, str] | None = None) -> str:
    """The one table: figure, median, min - max, n, target, pass/FAIL.

    A figure without a value shows its note (e.g. why it was not run) instead.
    """
    notes = notes or {}
    header = ("figure", "median", "min - max", "n", "target", "")
    rows: list[tuple[str, ...]] = []
    for key, f in figures.items():
        label = f["label"]
        unit = f" {f['unit']}" if f["unit"] else ""
        target, verdict = f["target"] or "", f["verdict"] or ""
        if f["median"] is None:
            rows.append((label, notes.get(key, "n/a"), target, verdict))
            continue
        spread_text = f"{_number(f['min'])} - {_number(f['max'])}"
        n = "" if f["n"] is None else str(f["n"])
        rows.append((label, _number(f["median"]) + unit, spread_text, n, target, verdict))
    full = [header, *(r for r in rows if len(r) == len(header))]
    widths = [max(len(r[i]) for r in full) for i in range(len(header))]
    widths[0] = max(len(r[0]) for r in [header, *rows])
    out = []
    for row in [header, *rows]:
        if len(row) != len(header):  # no value: the note, then target and verdict
            label, note, target, verdict = row
            out.append(f"  {label.ljust(widths[0])}  {note}  {target}  {verdict}".rstrip())
        else:
            cells = [row[0].ljust(widths[0])]
            cells += [c.rjust(w) for c, w in zip(row[1:4], widths[1:4], strict=True)]
            cells += [row[4].ljust(widths[4]), row[5]]
            out.append("  " + "  ".join(cells).rstrip())
        if row is header:
            out.append("  " + "-" * (sum(widths) + 2 * (len(widths) - 1)))
    return "\n".join(out)


def skipped_notes(args: argparse.Namespace, engine: str) -> dict[str, str]:
    """Why a phase figure has no value, when a flag or the engine says so."""
    notes = {}
    if args.skip_recovery:
        for key in ("recovery_s", "recovery_new_request_s", "graceful_restart_longest_gap_s"):
            notes[key] = "skipped (--skip-recovery)"
    if args.skip_competitions:
        notes["competitions_completed_per_s"] = "skipped (--skip-competitions)"
    if args.skip_two_workers:
        notes["admitted_per_s_two_workers"] = "skipped (--skip-two-workers)"
    eos = "Apache Kafka only" if engine != "kafka" else "skipped (--skip-exactly-once)"
    if engine != "kafka" or args.skip_exactly_once:
        notes["admitted_per_s_exactly_once"] = notes["ratio_exactly_once_over_at_least_once"] = eos
    return notes


def missed_deadlines(repetitions: list[dict[str, Any]]) -> list[str]:
    """Phases that saw fewer than N records before their deadline: their rates are partial."""
    missed = []
    for n, rep in enumerate(repetitions, 1):
        for name, phase in rep["phases"].items():
            if isinstance(phase, dict) and phase.get("reached_n") is False:
                missed.append(
                    f"repetition {n}, {name}: saw {phase['records_seen']} of {phase['events']}"
                )
    return missed


def _number(value: float) -> str:
    """Three significant figures at most, thousands separated."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
