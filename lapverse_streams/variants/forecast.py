"""The built-in `forecast` family: four forecasting methods scored on a held-out backtest."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from importlib.resources import files
from typing import Any, TypeGuard

from lapverse_streams.domain import forecast
from lapverse_streams.variants.base import FamilyInputError, VariantOutcome

MAX_SERIES_POINTS = 10_000
DEMO_HORIZON_POINTS = 12

# Fixed smoothing weights, so each variant is a distinct, reproducible strategy.
AGGRESSIVE_ALPHA, AGGRESSIVE_BETA = 0.8, 0.5
BALANCED_ALPHA, BALANCED_BETA, BALANCED_PHI = 0.5, 0.1, 0.9

# A fit takes (series, horizon) and returns (forecast, params that produced it).
Fit = Callable[[Sequence[float], int], tuple[list[float], dict[str, Any]]]


def _aggressive(series: Sequence[float], horizon: int) -> tuple[list[float], dict[str, Any]]:
    params = {"alpha": AGGRESSIVE_ALPHA, "beta": AGGRESSIVE_BETA}
    return forecast.holt(series, horizon, **params), params


def _balanced(series: Sequence[float], horizon: int) -> tuple[list[float], dict[str, Any]]:
    params = {"alpha": BALANCED_ALPHA, "beta": BALANCED_BETA, "phi": BALANCED_PHI}
    return forecast.damped_trend(series, horizon, **params), params


def _experimental(series: Sequence[float], horizon: int) -> tuple[list[float], dict[str, Any]]:
    alpha = forecast.fit_ses_alpha(series)
    return forecast.theta(series, horizon, alpha), {"alpha": alpha}


def _seasonal(period: int, source: str) -> Fit:
    params = {"period": period, "period_source": source}

    def fit(series: Sequence[float], horizon: int) -> tuple[list[float], dict[str, Any]]:
        return forecast.seasonal_naive(series, horizon, period), params

    return fit


METHODS = {
    "aggressive": "holt",
    "conservative": "seasonal_naive",
    "balanced": "damped_trend",
    "experimental": "theta",
}


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _series(raw: object) -> list[float]:
    if not isinstance(raw, list | tuple):
        raise FamilyInputError("input.series", "must be a list of numbers")
    if len(raw) > MAX_SERIES_POINTS:
        raise FamilyInputError("input.series", f"has more than {MAX_SERIES_POINTS} points")
    series: list[float] = []
    for index, value in enumerate(raw):
        try:
            point = float(value) if _is_number(value) else math.nan
        except OverflowError:  # an int beyond the float range
            point = math.nan
        if not math.isfinite(point):
            raise FamilyInputError("input.series", f"point {index} is not a finite number")
        series.append(point)
    return series


def _outcome(variant: str, series: Sequence[float], horizon: int, fit: Fit) -> VariantOutcome:
    train, actual = series[:-horizon], series[-horizon:]
    backtest, backtest_params = fit(train, horizon)
    published, params = fit(series, horizon)
    output = {
        "variant": variant,
        "method": METHODS[variant],
        "horizon": horizon,
        "params": params,
        "forecast": published,
        "backtest": {
            "train_points": len(train),
            "params": backtest_params,
            "actual": list(actual),
            "forecast": backtest,
            "smape": forecast.smape(actual, backtest),
        },
    }
    return VariantOutcome(forecast.backtest_score(actual, backtest), output)


class ForecastFamily:
    """Holt (aggressive), seasonal naive (conservative), damped (balanced), Theta (experimental).

    Each variant is scored by 1 - sMAPE/200 of a forecast fit on series[:-horizon] against
    series[-horizon:]; its published `forecast` is refit on the whole series.
    """

    name: str = "forecast"
    variants: tuple[str, ...] = tuple(METHODS)

    def validate_input(self, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Normalize {"series", "horizon", "period"?} or raise FamilyInputError."""
        if not isinstance(raw, Mapping):
            raise FamilyInputError("input", "must be an object with series and horizon")
        if "series" not in raw:
            raise FamilyInputError("input.series", "is required")
        series = _series(raw["series"])
        horizon = raw.get("horizon")
        if not _is_int(horizon) or horizon < 1:
            raise FamilyInputError("input.horizon", "must be an integer >= 1")
        if len(series) < 2 * horizon:
            raise FamilyInputError(
                "input.series", f"needs at least 2 x horizon = {2 * horizon} points"
            )
        period = raw.get("period")
        train_points = len(series) - horizon
        if period is not None and (not _is_int(period) or not 1 <= period <= train_points):
            raise FamilyInputError("input.period", f"must be an integer in 1..{train_points}")
        return {"series": series, "horizon": horizon, "period": period}

    async def run(self, variant: str, input: Mapping[str, Any]) -> VariantOutcome:
        """Backtest one variant and publish its forward forecast."""
        series: list[float] = input["series"]
        horizon: int = input["horizon"]
        if variant == "aggressive":
            return _outcome(variant, series, horizon, _aggressive)
        if variant == "balanced":
            return _outcome(variant, series, horizon, _balanced)
        if variant == "experimental":
            return _outcome(variant, series, horizon, _experimental)
        if variant == "conservative":
            if input.get("period") is not None:
                return _outcome(variant, series, horizon, _seasonal(input["period"], "input"))
            # Detected on the training part only, so the backtest cannot peek at the hold-out.
            period = forecast.detect_period(series[:-horizon])
            return _outcome(variant, series, horizon, _seasonal(period, "detected"))
        raise FamilyInputError("variant", f"unknown forecast variant {variant!r}")


def demo_input() -> dict[str, Any]:
    """The AirPassengers series (1949-1960, monthly) with a 12-month horizon."""
    path = files("lapverse_streams.variants") / "data" / "air_passengers.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"series": data["series"], "horizon": DEMO_HORIZON_POINTS, "period": data["period"]}
