"""News AI stand-in: `POST /v1/sentiment {"text"}` -> a lexicon-based sentiment."""

from __future__ import annotations

import math
import re

from aiohttp import web

from lapverse_streams.standins.control import error, read_json_object, service_app


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


POSITIVE = _words(
    "good great excellent strong growth gain gains record profit profits beat beats win wins "
    "winning success successful improve improved improves rise rises rising up surge soar "
    "soars positive optimistic bullish boost boosts robust best better happy love outperform "
    "upgrade upgraded recovery rally"
)
NEGATIVE = _words(
    "bad poor weak loss losses decline declines declining drop drops fall falls falling down "
    "crash plunge plunges miss misses fail fails failure negative pessimistic bearish worst "
    "worse risk risks cut cuts layoffs lawsuit fraud slump recession downgrade downgraded "
    "sad hate underperform warning debt"
)
NEGATORS = _words("not no never without hardly isn't wasn't don't doesn't didn't")
WORD = re.compile(r"[a-z']+")
NEUTRAL_BAND = 0.05


def score_text(text: str) -> dict[str, object]:
    """Sum of ±1 per lexicon word (flipped after a negator), squashed into [-1, 1]."""
    words = WORD.findall(text.lower())
    total, hits = 0, 0
    for i, word in enumerate(words):
        polarity = (word in POSITIVE) - (word in NEGATIVE)
        if polarity:
            hits += 1
            total += -polarity if i > 0 and words[i - 1] in NEGATORS else polarity
    score = total / math.sqrt(total * total + 4)
    label = "neutral"
    if abs(score) > NEUTRAL_BAND:
        label = "positive" if score > 0 else "negative"
    confidence = min(0.95, 0.55 + 0.1 * hits)
    return {"label": label, "score": round(score, 4), "confidence": round(confidence, 4)}


async def sentiment(request: web.Request) -> web.Response:
    """`POST /v1/sentiment`."""
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    text = body.get("text")
    if not isinstance(text, str):
        return error(422, "text must be a string")
    return web.json_response(score_text(text))


def create_app(
    *,
    api_key: str | None = None,
    latency_ms: float = 0.0,
    failure_rate: float = 0.0,
    seed: int | None = None,
) -> web.Application:
    """The News AI stand-in, faults settable at run time via `/control`."""
    return service_app(
        "/v1/sentiment",
        sentiment,
        api_key=api_key,
        latency_ms=latency_ms,
        failure_rate=failure_rate,
        seed=seed,
    )
