"""bench/figures.py: medians with their spread, targets and the one table of `make bench`."""

from __future__ import annotations

from typing import Any

from bench.figures import spread, summarise, table


def latency_entry(rate: float, p99s: list[float]) -> dict[str, Any]:
    """bench/latency.py's figures for one rate, one repetition per p99."""
    reps = [{"latency_ms": {"p50": 10.0, "p90": 20.0, "p99": p99, "max": 99.0}} for p99 in p99s]
    return {"rate_per_s": rate, "repetitions": reps}


def test_spread_is_the_median_with_min_and_max_of_the_values_there() -> None:
    assert spread([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert spread([None]) == {"median": None, "min": None, "max": None, "n": 0}


def test_targets_pass_or_fail_on_the_median() -> None:
    reps = [
        {"ratio_faust_over_raw": r, "recovery_s": s}
        for r, s in ((0.30, 4.0), (0.40, 6.0), (0.36, 4.5))
    ]
    latency = {"figures": [latency_entry(200, [80.0]), latency_entry(500, [40.0, 60.0, 45.0])]}
    figures = summarise(
        reps, latency, {"tasks_per_s": {"median": 4000, "min": 1, "max": 9}}, "kafka"
    )
    assert figures["ratio_faust_over_raw"]["median"] == 0.36
    assert figures["ratio_faust_over_raw"]["verdict"] == "pass"
    assert figures["recovery_s"]["verdict"] == "pass"  # median 4.5 s <= 5 s
    assert figures["gateway_p99_ms_at_500"]["verdict"] == "pass"  # median 45 ms
    assert figures["gateway_p99_ms_at_500"]["min"] == 40.0
    assert figures["gateway_p99_ms_at_200"]["verdict"] is None  # no target at 200 req/s
    assert figures["bulk_tasks_per_s"]["verdict"] == "FAIL"  # 4,000 < 5,000


def test_recovery_target_is_for_apache_kafka_and_missing_figures_have_no_verdict() -> None:
    figures = summarise([{"recovery_s": 9.0}], None, None, "tansu")
    assert figures["recovery_s"]["verdict"] is None
    assert figures["bulk_tasks_per_s"]["median"] is None
    assert figures["bulk_tasks_per_s"]["verdict"] is None


def test_table_shows_notes_for_figures_without_a_value() -> None:
    figures = summarise([{"raw_loop_per_s": 1000.0, "admitted_per_s": 400.0}], None, None, "kafka")
    text = table(figures, {"bulk_tasks_per_s": "not run: bench/bulk.py is not there yet"})
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["figure", "median"]
    assert any("raw aiokafka loop" in line and "1,000 /s" in line for line in lines)
    assert any("bulk ingestion" in line and "not run: bench/bulk.py" in line for line in lines)
