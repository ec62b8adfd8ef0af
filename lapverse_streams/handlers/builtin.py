"""Built-in handlers: ANALYSIS (text analysis), NOOP (benchmarks), CHAOS (failure drills)."""

from __future__ import annotations

import asyncio
import math
import random
import re
import weakref
from collections import Counter
from typing import Any

from lapverse_streams.events.models import TaskRequest
from lapverse_streams.handlers.base import Outcome, Services

_WORD = re.compile(r"[A-Za-z']+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "that",
        "the",
        "to",
        "was",
        "were",
        "with",
    ]
)
_POSITIVE = frozenset(
    [
        "good",
        "great",
        "excellent",
        "gain",
        "gains",
        "growth",
        "up",
        "beat",
        "strong",
        "record",
        "win",
        "wins",
        "improve",
    ]
)
_NEGATIVE = frozenset(
    [
        "bad",
        "poor",
        "loss",
        "losses",
        "down",
        "miss",
        "weak",
        "decline",
        "drop",
        "fail",
        "fails",
        "risk",
        "crash",
    ]
)


class AnalysisHandler:
    """Word statistics, keywords, a lexicon sentiment and News AI's sentiment of the text."""

    def __init__(self, services: Services) -> None:
        self.news_ai = services.news_ai

    async def run(self, request: TaskRequest) -> Outcome:
        """Analyse the description text."""
        words = [w.lower() for w in _WORD.findall(request.description)]
        content = [w for w in words if w not in _STOP]
        pos = sum(w in _POSITIVE for w in words)
        neg = sum(w in _NEGATIVE for w in words)
        score = 0.0 if pos + neg == 0 else (pos - neg) / (pos + neg)
        label = "positive" if score > 0.2 else "negative" if score < -0.2 else "neutral"
        sentences = [s for s in re.split(r"[.!?]+", request.description) if s.strip()]
        news = await self.news_ai.sentiment(request.description)
        return Outcome(
            {
                "words": len(words),
                "sentences": len(sentences),
                "keywords": [w for w, _ in Counter(content).most_common(5)],
                "sentiment": {
                    "label": news.label,
                    "score": news.score,
                    "confidence": news.confidence,
                    "source": "fallback" if news.fallback else "news-ai",
                    "fallback": news.fallback,
                },
                "lexiconSentiment": {"label": label, "score": round(score, 3)},
                "platforms": request.platforms,
            }
        )


class NoopHandler:
    """Does nothing; for measuring the pipeline itself."""

    def __init__(self, services: Services) -> None:
        pass

    async def run(self, request: TaskRequest) -> Outcome:
        """Return an empty result."""
        return Outcome({})


class ChaosHandler:
    """Failure drills: after requirements.sleepMs (capped by the drill limits), fail the first
    requirements.failAttempts attempts of a task, or else fail at requirements.failureRate."""

    def __init__(self, services: Services) -> None:
        self._max_sleep_ms = services.drill_limits.max_sleep_ms
        # attempts so far, by request object (one per task's retry loop), gone with the request
        self._attempts: dict[int, tuple[weakref.ref[TaskRequest], int]] = {}

    async def run(self, request: TaskRequest) -> Outcome:
        """Sleep, then fail or succeed as the requirements say; bad requirements fail the task."""
        extra = request.requirements.model_extra or {}
        sleep_ms = _number(extra, "sleepMs", 0.0, upper=None)
        fail_attempts = _number(extra, "failAttempts", None, upper=None)
        failure_rate = _number(extra, "failureRate", 1.0, upper=1.0)
        await asyncio.sleep(min(sleep_ms or 0.0, self._max_sleep_ms) / 1000)
        if fail_attempts is not None:
            attempt = self._attempt(request)
            if attempt <= fail_attempts:
                raise RuntimeError(f"chaos: injected failure {attempt}")
            return Outcome({"chaos": "survived", "failedAttempts": attempt - 1})
        if random.random() < (failure_rate or 0.0):
            raise RuntimeError("chaos: injected failure")
        return Outcome({"chaos": "survived"})

    def _attempt(self, request: TaskRequest) -> int:
        """This attempt's number for the request (1 for its first)."""
        key = id(request)
        ref, count = self._attempts.get(key, (None, 0))
        if ref is None or ref() is not request:
            ref, count = weakref.ref(request, lambda _: self._attempts.pop(key, None)), 0
        self._attempts[key] = (ref, count + 1)
        return count + 1


def _number(
    extra: dict[str, Any], name: str, default: float | None, upper: float | None
) -> float | None:
    """A requirement that must be a finite number in [0, upper]; anything else is a ValueError."""
    value = extra.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"requirements.{name} must be a number")
    if not math.isfinite(value) or value < 0 or (upper is not None and value > upper):
        bound = f"0..{upper}" if upper is not None else "a finite number ≥ 0"
        raise ValueError(f"requirements.{name} must be {bound}")
    return float(value)
