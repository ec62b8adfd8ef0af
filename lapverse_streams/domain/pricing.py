"""Cost model: integer micro-dollars inside, USD decimals outside."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from lapverse_streams.events.models import Complexity

MICROS_PER_USD = 1_000_000
BASE_TASK_MICROS = 10_000  # $0.01
MULTIPLIER: dict[Complexity, int] = {
    Complexity.SIMPLE: 1,
    Complexity.INTERMEDIATE: 2,
    Complexity.ADVANCED: 4,
    Complexity.EXPERT: 8,
}


def task_estimate_micros(complexity: Complexity) -> int:
    """Price of one task: base $0.01 times the complexity multiplier."""
    return BASE_TASK_MICROS * MULTIPLIER[complexity]


def competition_estimate_micros(competitors: int, complexity: Complexity) -> int:
    """Price of a round: per-variant cost times the number of competitors."""
    return task_estimate_micros(complexity) * competitors


def usd(micros: int) -> float:
    """Micro-dollars as a USD decimal for the API."""
    return round(micros / MICROS_PER_USD, 6)


def usd_to_micros(amount_usd: float) -> int:
    """USD decimal to integer micro-dollars (rounded half to even)."""
    return round(amount_usd * MICROS_PER_USD)


def billing_period(now_ms: int) -> str:
    """Calendar-month billing period, UTC, as YYYY-MM."""
    return _period_of_hour(now_ms // 3_600_000)  # a UTC month starts on an hour


@functools.lru_cache(maxsize=64)
def _period_of_hour(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, tz=UTC).strftime("%Y-%m")
