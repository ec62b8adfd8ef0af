"""Built-in handlers: ANALYSIS (text analysis), NOOP (benchmarks), CHAOS (failure drills)."""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter

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
    """Failure drills: after requirements.sleepMs, fail the first requirements.failAttempts
    attempts of a task, or else fail at requirements.failureRate (default 1.0)."""

    def __init__(self, services: Services) -> None:
        self._attempts: dict[int, int] = {}  # by request object: one per task's retry loop

    async def run(self, request: TaskRequest) -> Outcome:
        """Sleep, then fail or succeed as the requirements say."""
        extra = request.requirements.model_extra or {}
        await asyncio.sleep(float(extra.get("sleepMs", 0)) / 1000)
        if "failAttempts" in extra:
            attempt = self._attempts.get(id(request), 0) + 1
            self._attempts[id(request)] = attempt
            if attempt <= int(extra["failAttempts"]):
                raise RuntimeError(f"chaos: injected failure {attempt}")
            del self._attempts[id(request)]
            return Outcome({"chaos": "survived", "failedAttempts": attempt - 1})
        if random.random() < float(extra.get("failureRate", 1.0)):
            raise RuntimeError("chaos: injected failure")
        return Outcome({"chaos": "survived"})
