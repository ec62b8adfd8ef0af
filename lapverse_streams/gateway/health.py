"""The health score, the recent window it is computed over, and its history.

The score (0-100) starts at 100 and loses points for each of four things, over the last
`LAPVERSE_HEALTH_WINDOW_S` (5 minutes) of finished tasks and the current state:

| term | points lost | at most |
|---|---|---|
| errors: failed / finished, overall or of the worst tenant | 500 x ratio (10 % costs 50) | 50 |
| latency: p95 task duration over the latency objective | 20 x (p95 / objective - 1) | 20 |
| alerts firing (read from Prometheus) | 15 per page, 5 per ticket | 30 |
| breakers | 10 per half-open, 25 per open (an open breaker alone: degraded) | 40 |
| broker unreachable | 40 | 40 |

Error ratios only count with at least `MIN_FINISHED` finished tasks (overall, or of that
tenant), so two tasks and one failure are not an incident. Then the override: an error ratio
of 5 % or more caps the score at 79 (degraded at best), 10 % or more at 49 (unhealthy).
Labels: 80 and up healthy, 50 to 79 degraded, below 50 unhealthy.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

HEALTHY_FROM = 80
DEGRADED_FROM = 50
DEGRADED_ERROR_RATIO = 0.05
UNHEALTHY_ERROR_RATIO = 0.10
MIN_FINISHED = 10
MAX_RECENT = 200_000  # finished tasks kept for the window, at most
SEVERITY_POINTS = {"page": 15, "ticket": 5}
BREAKER_POINTS = {"half_open": 10, "open": 25}
WINDOWS_S = {"1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 86400, "30d": 30 * 86400}
MAX_POINTS = 120  # per history answer
TREND_POINTS = 5  # a change smaller than this in the mean score is "stable"


def label_of(score: int) -> str:
    """healthy, degraded or unhealthy."""
    return (
        "healthy"
        if score >= HEALTHY_FROM
        else "degraded"
        if score >= DEGRADED_FROM
        else "unhealthy"
    )


@dataclass(frozen=True)
class WindowFigures:
    """What the recent window says about tasks."""

    finished: int = 0
    failed: int = 0
    error_ratio: float = 0.0  # the worse of overall and worst tenant, floors applied
    worst_tenant: str | None = None
    p95_ms: float | None = None


@dataclass(frozen=True)
class Health:
    """The score, its label and the points each term took."""

    score: int
    status: str
    terms: dict[str, int]
    window: WindowFigures


def health_score(
    window: WindowFigures,
    latency_objective_ms: int,
    alerts: Iterable[str],
    breakers: Mapping[str, str],
    broker_up: bool,
) -> Health:
    """The score of the figures, per the table in this module's docstring."""
    ratio = window.error_ratio
    latency = 0
    if window.p95_ms is not None and window.p95_ms > latency_objective_ms:
        latency = min(20, math.ceil(20 * (window.p95_ms / latency_objective_ms - 1)))
    terms = {
        "errors": min(50, math.ceil(500 * ratio)),
        "latency": latency,
        "alerts": min(30, sum(SEVERITY_POINTS.get(s, 5) for s in alerts)),
        "breakers": min(40, sum(BREAKER_POINTS.get(s, 0) for s in breakers.values())),
        "broker": 0 if broker_up else 40,
    }
    score = max(0, 100 - sum(terms.values()))
    if ratio >= UNHEALTHY_ERROR_RATIO:
        score = min(score, DEGRADED_FROM - 1)
    elif ratio >= DEGRADED_ERROR_RATIO:
        score = min(score, HEALTHY_FROM - 1)
    return Health(score, label_of(score), terms, window)


@dataclass
class RecentTasks:
    """Finished tasks of the last `window_ms`, by their finishing time."""

    window_ms: int
    _tasks: deque[tuple[int, str, bool, int]] = field(default_factory=deque)

    def add(
        self, finished_ms: int, tenant: str, failed: bool, duration_ms: int, now_ms: int
    ) -> None:
        """Count a finished task (an old one, read while catching up, is left out)."""
        if finished_ms < now_ms - self.window_ms:
            return
        self._tasks.append((finished_ms, tenant, failed, duration_ms))
        if len(self._tasks) > MAX_RECENT:
            self._tasks.popleft()

    def figures(self, now_ms: int) -> WindowFigures:
        """Counts, the error ratio and the p95 duration over the window ending now."""
        while self._tasks and self._tasks[0][0] < now_ms - self.window_ms:
            self._tasks.popleft()
        tasks = [t for t in self._tasks if t[0] <= now_ms]
        if not tasks:
            return WindowFigures()
        failed = sum(1 for t in tasks if t[2])
        ratio = failed / len(tasks) if len(tasks) >= MIN_FINISHED else 0.0
        by_tenant: dict[str, list[int]] = {}
        for _, tenant, was_failed, _ in tasks:
            counts = by_tenant.setdefault(tenant, [0, 0])
            counts[0] += 1
            counts[1] += was_failed
        worst, worst_ratio = None, 0.0
        for tenant, (done, bad) in sorted(by_tenant.items()):
            if done >= MIN_FINISHED and bad / done > worst_ratio:
                worst, worst_ratio = tenant, bad / done
        durations = sorted(t[3] for t in tasks)
        p95 = float(durations[min(len(durations) - 1, math.ceil(0.95 * len(durations)) - 1)])
        return WindowFigures(len(tasks), failed, max(ratio, worst_ratio), worst, p95)


@dataclass(frozen=True)
class Snapshot:
    """One sample of the health history."""

    at_ms: int
    score: float
    status: str


class History:
    """A bounded series of health snapshots: fine for a day, five-minute means for 30 days.

    Fine samples come every `interval_s` (10 s by default: 8,640 a day); each closed
    five-minute bucket adds one coarse sample (its mean score and worst status), 8,640 for
    30 days. The windows up to 24 h read the fine series, 7d and 30d the coarse one.
    """

    COARSE_S = 300

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._fine: deque[Snapshot] = deque(maxlen=max(1, int(WINDOWS_S["24h"] / interval_s)))
        self._coarse: deque[Snapshot] = deque(maxlen=WINDOWS_S["30d"] // self.COARSE_S)
        self._bucket: list[Snapshot] = []

    def record(self, at_ms: int, health: Health) -> None:
        """Add a sample; close the five-minute bucket it leaves behind."""
        snapshot = Snapshot(at_ms, float(health.score), health.status)
        if self._bucket and _bucket_of(at_ms) != _bucket_of(self._bucket[0].at_ms):
            self._coarse.append(_merge(self._bucket, _start_of(self._bucket[0].at_ms)))
            self._bucket = []
        self._bucket.append(snapshot)
        self._fine.append(snapshot)

    def window(self, name: str, now_ms: int) -> list[Snapshot]:
        """The samples of a window (`WINDOWS_S`), oldest first."""
        since = now_ms - WINDOWS_S[name] * 1000
        if WINDOWS_S[name] <= WINDOWS_S["24h"]:
            return [s for s in self._fine if s.at_ms > since]
        closed = [s for s in self._coarse if s.at_ms >= since]
        current = [_merge(self._bucket, _start_of(self._bucket[0].at_ms))] if self._bucket else []
        return closed + current


def _bucket_of(at_ms: int) -> int:
    return at_ms // (History.COARSE_S * 1000)


def _start_of(at_ms: int) -> int:
    return _bucket_of(at_ms) * History.COARSE_S * 1000


STATUS_ORDER = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def _merge(samples: list[Snapshot], at_ms: int | None = None) -> Snapshot:
    """One sample for a run: its mean score and worst status, at `at_ms` or the first's."""
    worst = max(samples, key=lambda s: STATUS_ORDER.get(s.status, 2)).status
    at = samples[0].at_ms if at_ms is None else at_ms
    return Snapshot(at, sum(s.score for s in samples) / len(samples), worst)


def summarize(samples: list[Snapshot]) -> dict[str, object]:
    """Trend of a window: min, mean, max, current, and the direction of the mean score.

    The direction compares the mean of the last quarter of the samples with that of the
    first quarter: up by `TREND_POINTS` or more is improving, down as much is worsening.
    """
    if not samples:
        return {
            "samples": 0,
            "min": None,
            "mean": None,
            "max": None,
            "current": None,
            "direction": "unknown",
        }
    scores = [s.score for s in samples]
    quarter = max(1, len(scores) // 4)
    change = _mean(scores[-quarter:]) - _mean(scores[:quarter])
    direction = "stable"
    if len(scores) < 2:
        direction = "unknown"
    elif change >= TREND_POINTS:
        direction = "improving"
    elif change <= -TREND_POINTS:
        direction = "worsening"
    return {
        "samples": len(scores),
        "min": min(scores),
        "mean": round(_mean(scores), 1),
        "max": max(scores),
        "current": scores[-1],
        "direction": direction,
    }


def downsample(samples: list[Snapshot], points: int = MAX_POINTS) -> list[dict[str, object]]:
    """At most `points` samples: consecutive runs merged into their mean and worst status."""
    if len(samples) > points:
        size = math.ceil(len(samples) / points)
        samples = [_merge(samples[i : i + size]) for i in range(0, len(samples), size)]
    return [{"atMs": s.at_ms, "score": round(s.score, 1), "status": s.status} for s in samples]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def as_json(health: Health) -> dict[str, object]:
    """The score's terms and window figures, for /api/status (no tenant named: it is public)."""
    w = health.window
    window = {"finished": w.finished, "failed": w.failed, "errorRatio": round(w.error_ratio, 4)}
    return {"terms": health.terms, "window": {**window, "p95Ms": w.p95_ms}}
