"""The pure parts of bench/latency.py: percentiles, the open-loop schedule, the breakdown."""

from __future__ import annotations

import itertools

import pytest

from bench.latency import (
    Sample,
    body_status,
    combine,
    percentile,
    quantiles,
    schedule,
    split,
    summarise,
)


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(list(reversed(values)), 90) == 90.0  # order does not matter


def test_percentile_of_few_values_is_one_of_them() -> None:
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0], 50) == 1.0
    assert percentile([3.0, 1.0], 51) == 3.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 0)


def test_quantiles_scale_and_name_the_maximum() -> None:
    assert quantiles([0.010, 0.020, 0.030], (50, 100), scale=1000) == {"p50": 20.0, "max": 30.0}
    assert quantiles([], (99,)) == {"p99": None}


def test_schedule_is_fixed_in_advance_at_one_over_the_rate() -> None:
    times = schedule(500, 2)
    assert len(times) == 1000
    assert times[0] == 0.0
    assert times[1] == pytest.approx(0.002)
    assert times[-1] == pytest.approx(1.998)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
    assert gaps == {0.002}
    assert len(schedule(200, 30)) == 6000
    with pytest.raises(ValueError, match="positive"):
        schedule(0, 1)


def test_the_three_parts_add_up_to_the_latency() -> None:
    parts = split(sent_ms=1000.0, request_ts_ms=1003, decision_ts_ms=1030, received_ms=1041.5)
    assert parts.gateway_ms == 3.0
    assert parts.kafka_governor_ms == 27.0
    assert parts.answer_ms == 11.5
    assert parts.gateway_ms + parts.kafka_governor_ms + parts.answer_ms == 41.5


def test_body_status_reads_the_answer() -> None:
    assert body_status(202, b'{"taskId": "t", "status": "accepted"}') == "accepted"
    assert body_status(202, b'{"taskId": "t", "status": "pending"}') == "pending"
    assert body_status(429, b'{"status": 429, "taskId": "t"}') == "rejected"
    assert body_status(401, b'{"status": 401, "detail": "no"}') == "other"
    problem = b'{"type": "https://lapverse.io/problems/broker-unavailable", "status": 503}'
    assert body_status(503, problem) == "other: 503 broker-unavailable"
    assert body_status(500, b"oops") == "other"


def _sample(key: str, due: float, lag: float, latency: float, status: int, body: str) -> Sample:
    return Sample(key, "t", due, lag, 1000.0 + due * 1000 + lag * 1000, latency, status, body)


def test_summary_counts_outcomes_lag_and_the_breakdown() -> None:
    samples = [
        _sample("a", 0.0, 0.001, 0.040, 202, "accepted"),
        _sample("b", 0.5, 0.003, 3.000, 202, "pending"),
        _sample("c", 1.0, 0.002, 0.050, 202, "accepted"),
        Sample("d", "t", 1.5),  # never sent
    ]
    request_ts = {"a": 1005, "c": 2006}  # sent at 1001 and 2002 (wall clock ms)
    decision_ts = {"a": 1030, "b": 4000, "c": 2040}
    summary = summarise(samples, 2.0, 2.0, request_ts, decision_ts)
    assert summary["outcomes"] == {"accepted": 2, "rejected": 0, "pending": 1, "error": 1}
    assert (summary["scheduled"], summary["sent"], summary["decided"]) == (4, 3, 2)
    assert summary["send_lag_ms"] == {"p50": 2.0, "p99": 3.0, "max": 3.0}
    assert summary["generator_kept_up"] is True
    assert summary["achieved_send_rate_per_s"] == pytest.approx(2 / 1.001, abs=0.1)
    assert summary["latency_ms"]["max"] == 3000.0
    assert summary["latency_decided_ms"]["max"] == 50.0
    breakdown = summary["breakdown"]
    assert breakdown["matched"] == 2  # the pending one is not split
    assert breakdown["gateway_ms"] == {"p50": 4.0, "p99": 4.0}
    assert breakdown["kafka_governor_ms"] == {"p50": 25.0, "p99": 34.0}
    assert breakdown["answer_ms"] == {"p50": 11.0, "p99": 12.0}


def test_repetitions_combine_into_median_min_and_max() -> None:
    reps = [
        {"latency_ms": {"p99": 30.0}, "decided": 10, "kept_up": True, "engine": "tansu"},
        {"latency_ms": {"p99": 10.0}, "decided": 12, "kept_up": False, "engine": "tansu"},
        {"latency_ms": {"p99": 20.0}, "decided": 11, "kept_up": True, "engine": "tansu"},
    ]
    combined = combine(reps)
    assert combined["latency_ms"]["p99"] == {"median": 20.0, "min": 10.0, "max": 30.0}
    assert combined["decided"] == {"median": 11, "min": 10, "max": 12}
    assert combined["kept_up"] is False
    assert combined["engine"] == "tansu"
    assert combine([{"p50": None}, {"p50": 4.0}]) == {
        "p50": {"median": 4.0, "min": 4.0, "max": 4.0}
    }
