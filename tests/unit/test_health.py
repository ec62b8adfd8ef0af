"""The health score's terms and thresholds, its window, and its history."""

from __future__ import annotations

import pytest

from lapverse_streams.gateway.health import (
    MIN_FINISHED,
    History,
    RecentTasks,
    Snapshot,
    WindowFigures,
    downsample,
    health_score,
    label_of,
    summarize,
)

OBJECTIVE_MS = 1000
NOW = 1_800_000_000_000


QUIET = WindowFigures()


def score(window: WindowFigures = QUIET, **kw: object) -> tuple[int, str]:
    health = health_score(
        window,
        OBJECTIVE_MS,
        kw.get("alerts", []),  # type: ignore[arg-type]
        kw.get("breakers", {}),  # type: ignore[arg-type]
        bool(kw.get("broker_up", True)),
    )
    return health.score, health.status


@pytest.mark.parametrize(
    ("value", "label"),
    [(100, "healthy"), (80, "healthy"), (79, "degraded"), (50, "degraded"), (49, "unhealthy")],
)
def test_labels_at_their_thresholds(value: int, label: str) -> None:
    assert label_of(value) == label


def test_a_quiet_healthy_system_scores_100() -> None:
    assert score() == (100, "healthy")


def test_errors_cost_500_points_per_unit_ratio_and_the_override_caps_the_status() -> None:
    assert score(WindowFigures(100, 2, 0.02)) == (90, "healthy")
    assert score(WindowFigures(100, 4, 0.04)) == (80, "healthy")
    assert score(WindowFigures(100, 5, 0.05)) == (75, "degraded")  # at most 79 from 5 %
    assert score(WindowFigures(100, 10, 0.10)) == (49, "unhealthy")  # at most 49 from 10 %
    assert score(WindowFigures(100, 100, 1.0)) == (49, "unhealthy")


def test_the_issue_case_is_not_healthy_any_more() -> None:
    """One tenant at 0 % success and two page alerts: it showed 'healthy 91'."""
    window = WindowFigures(200, 20, 1.0, worst_tenant="globex")
    assert score(window, alerts=["page", "page"])[1] == "unhealthy"


def test_latency_over_the_objective_costs_up_to_20() -> None:
    assert score(WindowFigures(50, 0, 0.0, p95_ms=1000)) == (100, "healthy")
    assert score(WindowFigures(50, 0, 0.0, p95_ms=1500)) == (90, "healthy")
    assert score(WindowFigures(50, 0, 0.0, p95_ms=60_000)) == (80, "healthy")


def test_alerts_breakers_and_the_broker_take_their_points() -> None:
    assert score(alerts=["page"]) == (85, "healthy")
    assert score(alerts=["page", "page", "page"]) == (70, "degraded")  # at most 30
    assert score(alerts=["ticket"]) == (95, "healthy")
    assert score(breakers={"news_ai": "open"}) == (75, "degraded")  # serving fallbacks
    assert score(breakers={"news_ai": "half_open", "share_api": "open"}) == (65, "degraded")
    assert score(broker_up=False) == (60, "degraded")
    assert score(broker_up=False, breakers={"a": "open", "b": "open"}) == (20, "unhealthy")


def test_the_window_keeps_recent_tasks_and_floors_small_samples() -> None:
    recent = RecentTasks(window_ms=60_000)
    recent.add(NOW - 120_000, "acme", True, 10, NOW)  # before the window: left out
    for i in range(MIN_FINISHED - 1):
        recent.add(NOW - 1000, "acme", i == 0, 100 * (i + 1), NOW)
    assert recent.figures(NOW).error_ratio == 0.0  # one failure of nine: not an incident
    recent.add(NOW - 500, "acme", False, 1000, NOW)
    figures = recent.figures(NOW)
    assert (figures.finished, figures.failed, figures.error_ratio) == (10, 1, 0.1)
    assert figures.p95_ms == 1000
    assert recent.figures(NOW + 61_000).finished == 0  # all slid out


def test_the_worst_tenant_sets_the_error_ratio() -> None:
    recent = RecentTasks(window_ms=60_000)
    for _ in range(90):
        recent.add(NOW, "acme", False, 10, NOW)
    for _ in range(MIN_FINISHED):
        recent.add(NOW, "globex", True, 10, NOW)
    figures = recent.figures(NOW)
    assert figures.worst_tenant == "globex"
    assert figures.error_ratio == 1.0


def snap(at_ms: int, value: float) -> Snapshot:
    return Snapshot(at_ms, value, label_of(round(value)))


def test_trend_directions() -> None:
    falling = [snap(i, 100 - 3 * i) for i in range(12)]
    assert summarize(falling)["direction"] == "worsening"
    assert summarize(list(reversed(falling)))["direction"] == "improving"
    assert summarize([snap(i, 90 + (i % 2)) for i in range(12)])["direction"] == "stable"
    assert summarize([snap(0, 90)])["direction"] == "unknown"
    assert summarize([])["samples"] == 0
    assert (summarize(falling)["min"], summarize(falling)["max"]) == (67, 100)


def test_history_is_bounded_and_answers_each_window() -> None:
    history = History(interval_s=10)
    health = health_score(WindowFigures(), OBJECTIVE_MS, [], {}, True)
    start = NOW - 2 * 86_400_000
    for i in range(2 * 8640):  # two days of samples every 10 s
        history.record(start + i * 10_000, health)
    end = start + (2 * 8640 - 1) * 10_000
    assert len(history.window("1h", end)) == 360
    assert len(history.window("24h", end)) == 8640  # the fine series keeps one day
    coarse = history.window("7d", end)
    assert 575 <= len(coarse) <= 577  # five-minute means over the two days
    assert {s.status for s in coarse} == {"healthy"}


def test_downsampling_keeps_the_worst_status_of_each_run() -> None:
    samples = [snap(i, 90.0) for i in range(300)]
    samples[150] = snap(150, 10.0)
    points = downsample(samples, points=100)
    assert len(points) == 100
    assert [p["status"] for p in points].count("unhealthy") == 1
