"""News AI: the sentiment of a text, behind a circuit breaker, with an in-memory twin."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from lapverse_streams.clients.breaker import (
    BreakerState,
    GuardedClient,
    ServiceFailure,
)

SERVICE = "news_ai"
DEFAULT_TIMEOUT_MS = 3_000
DEFAULT_FAILURE_THRESHOLD = 50
DEFAULT_RESET_TIMEOUT_MS = 30_000
SentimentLabel = Literal["positive", "negative", "neutral"]
LABELS: frozenset[str] = frozenset({"positive", "negative", "neutral"})


@dataclass(frozen=True)
class Sentiment:
    """A sentiment; `fallback` marks the neutral answer served when the service failed."""

    label: SentimentLabel
    score: float
    confidence: float
    fallback: bool = False

    def __post_init__(self) -> None:
        if not -1.0 <= self.score <= 1.0:
            raise ValueError(f"score {self.score} is outside [-1, 1]")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} is outside [0, 1]")


def neutral_fallback() -> Sentiment:
    """What callers get when News AI cannot answer."""
    return Sentiment("neutral", 0.0, 0.5, fallback=True)


def parse_sentiment(answer: Mapping[str, Any]) -> Sentiment:
    """The service's `{"label","score","confidence"}`; anything else is a ServiceFailure."""
    label, score, confidence = answer.get("label"), answer.get("score"), answer.get("confidence")
    try:
        if label not in LABELS:
            raise ValueError(f"label {label!r}")
        return Sentiment(label, _number(score), _number(confidence))
    except ValueError as exc:
        raise ServiceFailure(f"unexpected sentiment answer: {exc}") from exc


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


class NewsAI(Protocol):
    """Sentiment analysis."""

    async def sentiment(self, text: str) -> Sentiment:
        """The sentiment of `text`; never raises for service trouble (returns the fallback)."""
        ...


class NewsAIClient(GuardedClient):
    """News AI over HTTP: `POST {base_url}/v1/sentiment`."""

    service = SERVICE
    default_timeout_ms = DEFAULT_TIMEOUT_MS
    default_failure_threshold = DEFAULT_FAILURE_THRESHOLD
    default_reset_timeout_ms = DEFAULT_RESET_TIMEOUT_MS

    async def sentiment(self, text: str) -> Sentiment:
        """The sentiment of `text`, or the neutral fallback."""

        async def ask() -> Sentiment:
            return parse_sentiment(await self._post("/v1/sentiment", {"text": text}))

        return await self.breaker.call(ask, neutral_fallback)


@dataclass
class InMemoryNewsAI:
    """News AI in memory: answers from `answers` (else neutral), or the fallback when down."""

    answers: dict[str, Sentiment] = field(default_factory=dict)
    available: bool = True
    state: BreakerState = "closed"
    texts: list[str] = field(default_factory=list)

    async def sentiment(self, text: str) -> Sentiment:
        """The configured sentiment of `text`, or the fallback when not available."""
        self.texts.append(text)
        if not self.available:
            return neutral_fallback()
        return self.answers.get(text, Sentiment("neutral", 0.0, 1.0))
