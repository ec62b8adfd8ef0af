"""Forecasting methods for short series and the sMAPE backtest score that ranks them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from operator import mul

# A lag must explain at least this much of the differenced series' variance to count as a
# season; white noise of 50+ points rarely reaches it at any lag, real monthly data does.
PERIOD_MIN_ACF = 0.4
# Longest season searched, a year of daily points; it bounds the O(n * lag) scan.
MAX_DETECTED_PERIOD = 366
# Smoothing weights tried when fitting SES: 0.05, 0.10, ..., 0.95.
SES_ALPHA_GRID = tuple(k / 20 for k in range(1, 20))


def _need_points(series: Sequence[float]) -> None:
    if not series:
        raise ValueError("series is empty")


def holt(series: Sequence[float], horizon: int, alpha: float, beta: float) -> list[float]:
    """Holt's linear trend: level l0 = y0, trend b0 = y1 - y0, forecast l_n + h * b_n."""
    return damped_trend(series, horizon, alpha, beta, phi=1.0)


def damped_trend(
    series: Sequence[float], horizon: int, alpha: float, beta: float, phi: float
) -> list[float]:
    """Gardner & McKenzie (1985) damped Holt: forecast l_n + (phi + ... + phi^h) * b_n."""
    _need_points(series)
    level = float(series[0])
    trend = float(series[1] - series[0]) if len(series) > 1 else 0.0
    for value in series[1:]:
        previous = level
        level = alpha * value + (1 - alpha) * (previous + phi * trend)
        trend = beta * (level - previous) + (1 - beta) * phi * trend
    forecast: list[float] = []
    damping = 0.0
    for step in range(1, horizon + 1):
        damping += phi**step
        forecast.append(level + damping * trend)
    return forecast


def seasonal_naive(series: Sequence[float], horizon: int, period: int) -> list[float]:
    """Repeat the last full season: F(h) = y[n - m + (h - 1) mod m]; period 1 is plain naive."""
    _need_points(series)
    if not 1 <= period <= len(series):
        raise ValueError(f"period {period} must be in 1..{len(series)}")
    season = list(series[-period:])
    return [float(season[(step - 1) % period]) for step in range(1, horizon + 1)]


def ses_level(series: Sequence[float], alpha: float) -> float:
    """Simple exponential smoothing level after the last point, starting from l0 = y0."""
    _need_points(series)
    level = float(series[0])
    for value in series[1:]:
        level = alpha * value + (1 - alpha) * level
    return level


def linear_slope(series: Sequence[float]) -> float:
    """Least-squares slope of the series against t = 0..n-1 (0 for a single point)."""
    n = len(series)
    if n < 2:
        return 0.0
    t_mean = (n - 1) / 2
    y_mean = sum(series) / n
    covariance = sum((t - t_mean) * (y - y_mean) for t, y in enumerate(series))
    variance = sum((t - t_mean) ** 2 for t in range(n))
    return covariance / variance


def fit_ses_alpha(series: Sequence[float], grid: Sequence[float] = SES_ALPHA_GRID) -> float:
    """The grid alpha with the least squared one-step SES error (the first one on ties)."""
    _need_points(series)
    best_alpha, best_sse = grid[0], float("inf")
    for alpha in grid:
        level, sse = float(series[0]), 0.0
        for value in series[1:]:
            error = value - level
            sse += error * error  # unlike ** 2, overflows to inf instead of raising
            level = alpha * value + (1 - alpha) * level
        if sse < best_sse:
            best_alpha, best_sse = alpha, sse
    return best_alpha


def theta(series: Sequence[float], horizon: int, alpha: float) -> list[float]:
    """Theta method as SES with drift (Hyndman & Billah 2003, eq. 3; R forecast::thetaf).

    F(h) = SES level + b/2 * (h - 1 + 1/alpha - (1 - alpha)^n / alpha), b the regression slope.
    """
    _need_points(series)
    level = ses_level(series, alpha)
    half_slope = linear_slope(series) / 2
    offset = 1 / alpha - (1 - alpha) ** len(series) / alpha
    return [level + half_slope * (step - 1 + offset) for step in range(1, horizon + 1)]


def _deviations(series: Sequence[float]) -> tuple[list[float], float]:
    mean = sum(series) / len(series)
    deviations = [x - mean for x in series]
    return deviations, sum(d * d for d in deviations)


def _acf(deviations: list[float], variance_sum: float, lag: int) -> float:
    if variance_sum == 0 or lag >= len(deviations):
        return 0.0
    covariance_sum: float = sum(map(mul, deviations, deviations[lag:]))
    return covariance_sum / variance_sum


def autocorrelation(series: Sequence[float], lag: int) -> float:
    """Sample ACF r_k = sum (x_t - m)(x_t+k - m) / sum (x_t - m)^2; 0 for a constant series."""
    _need_points(series)
    return _acf(*_deviations(series), lag)


def detect_period(
    series: Sequence[float],
    min_acf: float = PERIOD_MIN_ACF,
    max_period: int = MAX_DETECTED_PERIOD,
) -> int:
    """Season length: the lag in 2..min(len/2, max_period) with the top ACF of differences, else 1.

    Differencing first removes the trend, which otherwise makes lag 2 always look best.
    """
    differences = [b - a for a, b in pairwise(series)]
    if len(differences) < 4:
        return 1
    deviations, variance_sum = _deviations(differences)
    best_lag, best_acf = 1, min_acf
    for lag in range(2, min(len(differences) // 2, max_period) + 1):
        acf = _acf(deviations, variance_sum, lag)
        if acf > best_acf:
            best_lag, best_acf = lag, acf
    return best_lag


def smape(actual: Sequence[float], forecast: Sequence[float]) -> float:
    """Symmetric MAPE in 0..200: 100/h * sum 2|F - A| / (|A| + |F|), a 0/0 term counting 0.

    A term with an overflowed (non-finite) value counts 2, the worst, so the score stays in 0..1.
    """
    if len(actual) != len(forecast) or not actual:
        raise ValueError("actual and forecast must be non-empty and of equal length")
    total = 0.0
    for a, f in zip(actual, forecast, strict=True):
        scale = abs(a) + abs(f)
        if not math.isfinite(f - a):
            total += 2
        elif scale > 0:
            total += 2 * abs(f - a) / scale
    return 100 * total / len(actual)


def backtest_score(actual: Sequence[float], forecast: Sequence[float]) -> float:
    """Score in 0..1 of a held-out forecast: 1 - sMAPE / 200 (1.0 is a perfect forecast)."""
    return 1 - smape(actual, forecast) / 200
