"""Wall-clock time in milliseconds, the unit every event and table uses."""

import time


def now_ms() -> int:
    """Wall clock in milliseconds."""
    return time.time_ns() // 1_000_000
