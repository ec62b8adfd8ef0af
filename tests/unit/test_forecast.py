"""Forecast methods against hand-computed values, and the built-in forecast variant family."""

from __future__ import annotations

import math
import random
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from lapverse_streams.domain import forecast
from lapverse_streams.variants import base
from lapverse_streams.variants.base import FamilyInputError, VariantFamily
from lapverse_streams.variants.forecast import MAX_SERIES_POINTS, ForecastFamily, demo_input

SERIES = [10.0, 12.0, 13.0, 15.0, 16.0]


def test_holt_by_hand() -> None:
    # alpha = beta = 0.5; l0 = 10, b0 = 12 - 10 = 2
    # y=12: l = 6 + .5(10 + 2) = 12          b = .5(12 - 10) + .5(2) = 2
    # y=13: l = 6.5 + .5(12 + 2) = 13.5      b = .5(1.5) + .5(2) = 1.75
    # y=15: l = 7.5 + .5(15.25) = 15.125     b = .5(1.625) + .5(1.75) = 1.6875
    # y=16: l = 8 + .5(16.8125) = 16.40625   b = .5(1.28125) + .5(1.6875) = 1.484375
    # F(1) = 16.40625 + 1.484375 = 17.890625, F(2) = 16.40625 + 2(1.484375) = 19.375
    assert forecast.holt(SERIES, 2, alpha=0.5, beta=0.5) == pytest.approx([17.890625, 19.375])


def test_damped_trend_by_hand() -> None:
    # alpha = beta = phi = 0.5; l0 = 10, b0 = 2
    # y=12: l = 6 + .5(10 + .5*2) = 11.5               b = .5(1.5) + .25(2) = 1.25
    # y=13: l = 6.5 + .5(11.5 + .625) = 12.5625        b = .5(1.0625) + .25(1.25) = .84375
    # y=15: l = 7.5 + .5(12.984375) = 13.9921875       b = .5(1.4296875) + .25(.84375) = .92578125
    # y=16: l = 8 + .5(14.455078125) = 15.2275390625   b = .5(1.2353515625) + .25(.92578125)
    #                                                    = .84912109375
    # F(1) = l + .5 b = 15.652099609375, F(2) = l + (.5 + .25) b = 15.8643798828125
    expected = [15.652099609375, 15.8643798828125]
    assert forecast.damped_trend(SERIES, 2, 0.5, 0.5, phi=0.5) == pytest.approx(expected)


def test_damped_trend_with_phi_one_is_holt() -> None:
    damped = forecast.damped_trend(SERIES, 3, 0.8, 0.5, phi=1.0)
    assert damped == forecast.holt(SERIES, 3, 0.8, 0.5)


def test_theta_by_hand() -> None:
    # SES alpha .5 from l0 = 10: 11, 12, 13.5, 14.75
    # slope: t-mean 2, y-mean 13.2, sum (t-2)(y-13.2) = 6.4 + 1.2 + 0 + 1.8 + 5.6 = 15,
    #        sum (t-2)^2 = 10, b = 1.5, b/2 = .75
    # offset = 1/.5 - .5^5/.5 = 2 - .0625 = 1.9375
    # F(1) = 14.75 + .75(0 + 1.9375) = 16.203125, F(2) = 14.75 + .75(1 + 1.9375) = 16.953125
    assert forecast.theta(SERIES, 2, alpha=0.5) == pytest.approx([16.203125, 16.953125])


def test_seasonal_naive_repeats_last_season() -> None:
    assert forecast.seasonal_naive([1, 2, 3, 4, 5, 6, 7], 5, period=3) == [5, 6, 7, 5, 6]
    assert forecast.seasonal_naive([1, 2, 3], 2, period=1) == [3, 3]
    with pytest.raises(ValueError, match="period"):
        forecast.seasonal_naive([1, 2], 1, period=3)


def test_single_point_forecasts_are_flat() -> None:
    assert forecast.holt([5.0], 2, 0.8, 0.5) == [5.0, 5.0]
    assert forecast.theta([5.0], 2, 0.5) == [5.0, 5.0]


def test_fit_ses_alpha_picks_least_squared_one_step_error() -> None:
    # [0, 10, 0, 10]: alpha 1 errs 10, -10, 10 (SSE 300); alpha .5 errs 10, -5, 7.5 (SSE 181.25)
    assert forecast.fit_ses_alpha([0, 10, 0, 10], grid=(0.5, 1.0)) == 0.5
    # a clean ramp is best followed at once
    assert forecast.fit_ses_alpha([0, 10, 20, 30], grid=(0.5, 1.0)) == 1.0


def test_autocorrelation_by_hand() -> None:
    # mean 2.5, deviations -1.5 -.5 .5 1.5, sum of squares 5; lag 1: .75 - .25 + .75 = 1.25
    assert forecast.autocorrelation([1, 2, 3, 4], 1) == pytest.approx(0.25)
    assert forecast.autocorrelation([3, 3, 3], 1) == 0.0


def test_detect_period_finds_season_under_a_trend() -> None:
    seasonal = [value + 0.5 * t for t, value in enumerate([0, 5, 9, 2] * 8)]
    assert forecast.detect_period(seasonal) == 4


@pytest.mark.parametrize(
    "series",
    [list(range(40)), [3.0] * 40, [1.0, 2.0, 1.0], []],
    ids=["ramp", "flat", "short", "empty"],
)
def test_detect_period_falls_back_to_naive(series: list[float]) -> None:
    assert forecast.detect_period(series) == 1


def test_detect_period_on_air_passengers_training_part() -> None:
    assert forecast.detect_period(demo_input()["series"][:-12]) == 12


def test_smape_by_hand() -> None:
    # terms: 2*10/210 = 2/21, 0/0 counts 0, 0 -> sMAPE = 100/3 * 2/21 = 200/63, score 62/63
    assert forecast.smape([100, 0, 50], [110, 0, 50]) == pytest.approx(200 / 63)
    assert forecast.backtest_score([100, 0, 50], [110, 0, 50]) == pytest.approx(62 / 63)


@pytest.mark.parametrize(
    ("actual", "predicted", "score"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 1.0),
        ([0.0, 0.0], [0.0, 0.0], 1.0),
        ([0.0], [5.0], 0.0),
        ([1.0], [-1.0], 0.0),
        ([10.0, 0.0], [10.0, 4.0], 0.5),
        ([1.0, 2.0], [math.inf, 2.0], 0.5),
        ([1.0], [math.nan], 0.0),
    ],
    ids=["perfect", "all-zero", "zero-actual", "opposite-sign", "half", "overflow", "nan"],
)
def test_backtest_score_edges(actual: list[float], predicted: list[float], score: float) -> None:
    assert forecast.backtest_score(actual, predicted) == pytest.approx(score)


def test_smape_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="equal length"):
        forecast.smape([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="equal length"):
        forecast.smape([], [])


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (None, "input"),
        ([1, 2, 3], "input"),
        ({"horizon": 1}, "input.series"),
        ({"series": "1,2,3,4", "horizon": 1}, "input.series"),
        ({"series": [1, "2", 3, 4], "horizon": 1}, "input.series"),
        ({"series": [1, True, 3, 4], "horizon": 1}, "input.series"),
        ({"series": [1, math.nan, 3, 4], "horizon": 1}, "input.series"),
        ({"series": [1, math.inf, 3, 4], "horizon": 1}, "input.series"),
        ({"series": [1, 10**400, 3, 4], "horizon": 1}, "input.series"),
        ({"series": [1.0] * (MAX_SERIES_POINTS + 1), "horizon": 1}, "input.series"),
        ({"series": [1, 2, 3, 4, 5], "horizon": 3}, "input.series"),
        ({"series": [1, 2, 3, 4]}, "input.horizon"),
        ({"series": [1, 2, 3, 4], "horizon": 0}, "input.horizon"),
        ({"series": [1, 2, 3, 4], "horizon": 1.5}, "input.horizon"),
        ({"series": [1, 2, 3, 4], "horizon": True}, "input.horizon"),
        ({"series": [1, 2, 3, 4], "horizon": 2, "period": 0}, "input.period"),
        ({"series": [1, 2, 3, 4], "horizon": 2, "period": 3}, "input.period"),
        ({"series": [1, 2, 3, 4], "horizon": 2, "period": "2"}, "input.period"),
    ],
)
def test_validate_input_rejects(raw: Any, field: str) -> None:
    with pytest.raises(FamilyInputError) as caught:
        ForecastFamily().validate_input(raw)
    assert caught.value.field == field


def test_validate_input_normalizes() -> None:
    normalized = ForecastFamily().validate_input({"series": [1, 2.5, 3, 4], "horizon": 2})
    assert normalized == {"series": [1.0, 2.5, 3.0, 4.0], "horizon": 2, "period": None}


async def test_run_reports_backtest_and_forward_forecast() -> None:
    family = ForecastFamily()
    outcome = await family.run("balanced", family.validate_input({"series": SERIES, "horizon": 2}))
    backtest = outcome.output["backtest"]
    assert backtest["train_points"] == 3
    assert backtest["actual"] == [15.0, 16.0]
    assert len(backtest["forecast"]) == 2
    assert outcome.score == forecast.backtest_score([15.0, 16.0], backtest["forecast"])
    assert outcome.output["forecast"] == forecast.damped_trend(SERIES, 2, 0.5, 0.1, 0.9)


async def test_conservative_detects_period_on_training_part() -> None:
    family = ForecastFamily()
    series = [float(v) for v in [0, 5, 9, 2] * 8]
    outcome = await family.run(
        "conservative", family.validate_input({"series": series, "horizon": 4})
    )
    assert outcome.output["params"] == {"period": 4, "period_source": "detected"}
    assert outcome.score == 1.0


async def test_unknown_variant_is_rejected() -> None:
    family = ForecastFamily()
    with pytest.raises(FamilyInputError) as caught:
        await family.run("reckless", family.validate_input({"series": SERIES, "horizon": 2}))
    assert caught.value.field == "variant"


def _flattening() -> list[float]:
    series = [100.0 + 2 * t for t in range(30)]
    slope = 2.0
    for _ in range(16):
        slope *= 0.88
        series.append(series[-1] + slope)
    return series


def _noisy_level(seed: int) -> list[float]:
    rng = random.Random(seed)
    return [100 + 0.1 * t + rng.uniform(-15, 15) for t in range(100)]


KNOWN_BEST = [
    # a clean 12-point season repeats exactly, which nothing but seasonal naive reproduces
    ("season", [100 + 20 * math.sin(2 * math.pi * t / 12) for t in range(60)], 12, "conservative"),
    # slope 1 for 40 points then slope 6: the fast trend catches up, the others average it away
    (
        "kink",
        [100.0 + t for t in range(40)] + [139.0 + 6 * k for k in range(1, 21)],
        6,
        "aggressive",
    ),
    # steady growth whose slope then shrinks 12% a step: the damped trend bends with it
    ("flattening", _flattening(), 8, "balanced"),
    # a noisy level with a mild drift: Theta's smoothed level plus half the fitted slope
    ("noisy-level", _noisy_level(0), 12, "experimental"),
]


async def _scores(series: list[float], horizon: int) -> dict[str, float]:
    family = ForecastFamily()
    normalized = family.validate_input({"series": series, "horizon": horizon})
    return {v: (await family.run(v, normalized)).score for v in family.variants}


@pytest.mark.parametrize(
    ("series", "horizon", "winner"), [row[1:] for row in KNOWN_BEST], ids=[r[0] for r in KNOWN_BEST]
)
async def test_known_best_variant(series: list[float], horizon: int, winner: str) -> None:
    scores = await _scores(series, horizon)
    assert max(scores, key=scores.__getitem__) == winner, scores


async def test_theta_wins_noisy_levels_on_average() -> None:
    totals = dict.fromkeys(ForecastFamily.variants, 0.0)
    for seed in range(20):
        for variant, score in (await _scores(_noisy_level(seed), 12)).items():
            totals[variant] += score
    assert max(totals, key=totals.__getitem__) == "experimental", totals


def test_demo_is_air_passengers() -> None:
    demo = demo_input()
    series = demo["series"]
    assert (len(series), demo["horizon"], demo["period"]) == (144, 12, 12)
    assert sum(series[:12]) == 1520
    assert series[-12:] == [417, 391, 419, 461, 472, 535, 622, 606, 508, 461, 390, 432]
    assert (max(series), min(series), sum(series)) == (622, 104, 40363)


async def test_all_variants_score_on_demo() -> None:
    family = ForecastFamily()
    normalized = family.validate_input(demo_input())
    scores = {v: (await family.run(v, normalized)).score for v in family.variants}
    assert all(0 < score <= 1 for score in scores.values())
    assert max(scores, key=scores.__getitem__) == "conservative"


def test_load_families_instantiates_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = EntryPoint(
        name="forecast",
        value="lapverse_streams.variants.forecast:ForecastFamily",
        group=base.ENTRY_POINT_GROUP,
    )
    monkeypatch.setattr(base, "entry_points", lambda group: [entry] if group == entry.group else [])
    families: dict[str, VariantFamily] = base.load_families()
    assert list(families) == ["forecast"]
    assert families["forecast"].variants == (
        "aggressive",
        "conservative",
        "balanced",
        "experimental",
    )
