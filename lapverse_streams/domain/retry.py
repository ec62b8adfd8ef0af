"""Retry schedule: exponential backoff with full jitter."""

from __future__ import annotations

import random


def backoff_ms(
    attempt: int, base_ms: int, jitter: float = 0.5, rng: random.Random | None = None
) -> int:
    """Delay before retry `attempt` (1-based): base * 2^(attempt-1), +- jitter fraction."""
    delay = base_ms * 2 ** (attempt - 1)
    spread = delay * jitter
    return int(delay - spread + (rng or random).random() * 2 * spread)
