"""News AI and Share API clients against their stand-ins over real HTTP, and the breaker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from lapverse_streams.clients.breaker import (
    CircuitBreaker,
    RecordingObserver,
    ServiceFailure,
    status_is_failure,
)
from lapverse_streams.clients.news_ai import (
    InMemoryNewsAI,
    NewsAIClient,
    Sentiment,
    neutral_fallback,
    parse_sentiment,
)
from lapverse_streams.clients.share_api import InMemoryShareAPI, Post, ShareAPIClient
from lapverse_streams.standins import StandIn, StandInKind, start_standin
from lapverse_streams.standins.news_ai import score_text

KEY = "test-key"
RESET_MS = 200
RESET_WAIT_S = RESET_MS / 1000 + 0.05
StartStandIn = Callable[..., Awaitable[StandIn]]


async def news_call(client: Any) -> Any:
    return await client.sentiment("Record growth and strong gains")


async def share_call(client: Any) -> Any:
    return await client.publish("twitter", "Our champion won", "round-1:twitter")


# kind, client class, one call, its service name
SERVICES = {
    "news-ai": (NewsAIClient, news_call, "news_ai"),
    "share-api": (ShareAPIClient, share_call, "share_api"),
}
both_services = pytest.mark.parametrize("kind", sorted(SERVICES))


def is_fallback(kind: str, answer: Any) -> bool:
    if kind == "news-ai":
        return bool(answer == neutral_fallback())
    return (
        isinstance(answer, Post)
        and answer.fallback
        and answer.post_id.startswith("fallback-twitter-")
        and answer.url is None
    )


@pytest.fixture
async def standin() -> AsyncIterator[StartStandIn]:
    """Start stand-ins on free ports; all stop at teardown."""
    started: list[StandIn] = []

    async def start(kind: StandInKind, **options: Any) -> StandIn:
        running = await start_standin(kind, "127.0.0.1", 0, api_key=KEY, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def control(http: aiohttp.ClientSession, running: StandIn, **changes: Any) -> Any:
    """GET /control, or PUT the changes first."""
    if changes:
        async with http.put(f"{running.url}/control", json=changes) as response:
            assert response.status == 200, await response.text()
    async with http.get(f"{running.url}/control") as response:
        return await response.json()


def client_for(kind: str, running: StandIn, observer: RecordingObserver, **options: Any) -> Any:
    client_class, _, _ = SERVICES[kind]
    return client_class(running.url, KEY, observer=observer, **options)


async def test_news_ai_answers_the_sentiment(standin: StartStandIn) -> None:
    running, observer = await standin("news-ai"), RecordingObserver()
    async with NewsAIClient(running.url, KEY, observer=observer) as client:
        good = await client.sentiment("Record growth and strong gains")
        bad = await client.sentiment("Losses and a lawsuit; the outlook is not good")
    assert (good.label, good.fallback) == ("positive", False)
    assert good.score > 0.5
    assert 0 < good.confidence <= 1
    assert (bad.label, bad.fallback) == ("negative", False)
    assert observer.outcomes == ["success", "success"]
    assert client.state == "closed"


async def test_share_api_publishes(standin: StartStandIn) -> None:
    running, observer = await standin("share-api"), RecordingObserver()
    async with ShareAPIClient(running.url, KEY, observer=observer) as client:
        post = await client.publish("twitter", "Our champion won", "round-1:twitter")
        again = await client.publish("twitter", "Our champion won", "round-1:twitter")
        other = await client.publish("twitter", "Our champion won", "round-2:twitter")
    assert post.platform == "twitter"
    assert post.post_id.startswith("twitter-")
    assert post.url == f"{running.url}/p/twitter/{post.post_id}"
    assert not post.fallback
    assert again == post
    assert other.post_id != post.post_id
    assert observer.outcomes == ["success"] * 3


async def test_share_api_sends_the_idempotency_key() -> None:
    seen: list[tuple[str | None, str | None]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Idempotency-Key"), request.headers.get("Authorization")))
        return web.json_response({"postId": "twitter-1", "url": None}, status=201)

    app = web.Application()
    app.router.add_post("/v1/posts", record)
    async with TestServer(app) as server, ShareAPIClient(str(server.make_url("")), KEY) as client:
        post = await client.publish("twitter", "Our champion won", "round-1:twitter")
    assert (post.post_id, post.fallback) == ("twitter-1", False)
    assert seen == [("round-1:twitter", f"Bearer {KEY}")]


@both_services
async def test_failure_serves_a_fallback_reported_as_fallback(
    standin: StartStandIn, kind: str
) -> None:
    running, observer = await standin(kind, failure_rate=1.0), RecordingObserver()
    _, call, service = SERVICES[kind]
    async with client_for(kind, running, observer, failure_threshold=3) as client:
        answer = await call(client)
    assert is_fallback(kind, answer)
    assert [(s, outcome) for s, outcome, _ in observer.calls] == [(service, "fallback")]


@both_services
async def test_opens_after_exactly_n_failures_then_rejects_without_calling(
    standin: StartStandIn, http: aiohttp.ClientSession, kind: str
) -> None:
    running, observer = await standin(kind, failure_rate=1.0), RecordingObserver()
    _, call, service = SERVICES[kind]
    async with client_for(kind, running, observer, failure_threshold=3) as client:
        for _ in range(2):
            await call(client)
        assert (client.state, client.breaker.failure_count) == ("closed", 2)
        await call(client)
        assert client.state == "open"
        answers = [await call(client) for _ in range(5)]
    assert all(is_fallback(kind, answer) for answer in answers)
    assert observer.outcomes == ["fallback"] * 3 + ["rejected"] * 5
    assert observer.states == [(service, "open")]
    assert (await control(http, running))["requests"] == 3


@both_services
async def test_a_success_resets_the_consecutive_count(
    standin: StartStandIn, http: aiohttp.ClientSession, kind: str
) -> None:
    running, observer = await standin(kind, failure_rate=1.0), RecordingObserver()
    _, call, _ = SERVICES[kind]
    async with client_for(kind, running, observer, failure_threshold=3) as client:
        await call(client)
        await call(client)
        await control(http, running, failureRate=0.0)
        await call(client)
        await control(http, running, failureRate=1.0)
        await call(client)
        await call(client)
        assert (client.state, client.breaker.failure_count) == ("closed", 2)


@pytest.mark.parametrize(
    ("kind", "threshold", "timeout_ms"), [("news-ai", 50, 3_000), ("share-api", 30, 2_000)]
)
async def test_production_defaults(
    standin: StartStandIn, http: aiohttp.ClientSession, kind: str, threshold: int, timeout_ms: int
) -> None:
    running, observer = await standin(kind, failure_rate=1.0), RecordingObserver()
    client_class, call, _ = SERVICES[kind]
    async with client_class(running.url, KEY, observer=observer) as client:
        assert client.timeout_ms == timeout_ms
        assert client.breaker.reset_timeout_ms == 30_000
        for _ in range(threshold - 1):
            await call(client)
        assert client.state == "closed"
        await call(client)
        assert client.state == "open"
        await call(client)
    assert observer.outcomes == ["fallback"] * threshold + ["rejected"]
    assert (await control(http, running))["requests"] == threshold


@both_services
async def test_half_open_success_closes(
    standin: StartStandIn, http: aiohttp.ClientSession, kind: str
) -> None:
    running, observer = await standin(kind, failure_rate=1.0), RecordingObserver()
    _, call, service = SERVICES[kind]
    options = {"failure_threshold": 2, "reset_timeout_ms": RESET_MS}
    async with client_for(kind, running, observer, **options) as client:
        await call(client)
        await call(client)
        await control(http, running, failureRate=0.0)
        await asyncio.sleep(RESET_WAIT_S)
        assert client.state == "half_open"
        assert not is_fallback(kind, await call(client))
        assert client.state == "closed"
    assert observer.states == [(service, "open"), (service, "half_open"), (service, "closed")]
    assert observer.outcomes == ["fallback", "fallback", "success"]
    assert (await control(http, running))["requests"] == 3


@both_services
async def test_half_open_failure_reopens(standin: StartStandIn, kind: str) -> None:
    running, observer = await standin(kind, failure_rate=1.0), RecordingObserver()
    _, call, _ = SERVICES[kind]
    options = {"failure_threshold": 2, "reset_timeout_ms": RESET_MS}
    async with client_for(kind, running, observer, **options) as client:
        await call(client)
        await call(client)
        await asyncio.sleep(RESET_WAIT_S)
        await call(client)
        assert client.state == "open"
        await call(client)
    assert [state for _, state in observer.states] == ["open", "half_open", "open"]
    assert observer.outcomes == ["fallback", "fallback", "fallback", "rejected"]


async def test_half_open_lets_a_single_trial_through(
    standin: StartStandIn, http: aiohttp.ClientSession
) -> None:
    running, observer = await standin("news-ai", failure_rate=1.0), RecordingObserver()
    options = {"failure_threshold": 1, "reset_timeout_ms": RESET_MS}
    async with NewsAIClient(running.url, KEY, observer=observer, **options) as client:
        await client.sentiment("x")
        await control(http, running, failureRate=0.0, latencyMs=100)
        await asyncio.sleep(RESET_WAIT_S)
        answers = await asyncio.gather(*(client.sentiment("good") for _ in range(5)))
        assert client.state == "closed"
    assert sum(not answer.fallback for answer in answers) == 1
    assert sorted(observer.outcomes[1:]) == ["rejected"] * 4 + ["success"]
    assert (await control(http, running))["requests"] == 2


@both_services
async def test_a_timeout_counts_as_a_failure(standin: StartStandIn, kind: str) -> None:
    running, observer = await standin(kind, latency_ms=1_000), RecordingObserver()
    _, call, _ = SERVICES[kind]
    options = {"failure_threshold": 2, "timeout_ms": 100}
    async with client_for(kind, running, observer, **options) as client:
        assert is_fallback(kind, await call(client))
        await call(client)
        assert client.state == "open"
    assert observer.outcomes == ["fallback", "fallback"]
    assert all(100 <= duration_ms < 800 for _, _, duration_ms in observer.calls)


async def test_control_changes_latency_and_failure_rate_at_run_time(
    standin: StartStandIn, http: aiohttp.ClientSession
) -> None:
    running, observer = await standin("news-ai"), RecordingObserver()
    assert await control(http, running) == {
        "latencyMs": 0.0,
        "failureRate": 0.0,
        "requests": 0,
        "failures": 0,
    }
    async with NewsAIClient(running.url, KEY, observer=observer) as client:
        assert not (await client.sentiment("good")).fallback
        await control(http, running, failureRate=1.0)
        assert (await client.sentiment("good")).fallback
        await control(http, running, failureRate=0.0, latencyMs=150)
        assert not (await client.sentiment("good")).fallback
    assert observer.outcomes == ["success", "fallback", "success"]
    assert observer.calls[2][2] >= 150
    after = await control(http, running)
    assert (after["latencyMs"], after["requests"], after["failures"]) == (150.0, 3, 1)


@pytest.mark.parametrize("body", [{"failureRate": 1.5}, {"latencyMs": -1}, {"latency": 5}, []])
async def test_control_rejects_bad_changes(
    standin: StartStandIn, http: aiohttp.ClientSession, body: Any
) -> None:
    running = await standin("share-api")
    async with http.put(f"{running.url}/control", json=body) as response:
        assert response.status == 400
        assert "error" in await response.json()
    assert (await control(http, running))["failureRate"] == 0.0


@both_services
async def test_a_refused_request_serves_the_fallback_without_counting(
    standin: StartStandIn, kind: str
) -> None:
    running, observer = await standin(kind), RecordingObserver()
    client_class, call, _ = SERVICES[kind]
    async with client_class(running.url, "wrong-key", observer=observer, failure_threshold=1) as c:
        assert is_fallback(kind, await call(c))
        assert c.state == "closed"
    assert observer.outcomes == ["fallback"]


async def test_the_stand_in_needs_the_bearer_key(
    standin: StartStandIn, http: aiohttp.ClientSession
) -> None:
    running = await standin("share-api")
    payload = {"platform": "twitter", "text": "hi"}
    async with http.post(f"{running.url}/v1/posts", json=payload) as response:
        assert response.status == 401
    headers = {"Authorization": f"Bearer {KEY}"}
    async with http.post(f"{running.url}/v1/posts", json=payload, headers=headers) as response:
        assert response.status == 201


async def test_calls_need_start() -> None:
    with pytest.raises(RuntimeError, match="start"):
        await NewsAIClient("http://127.0.0.1:9").sentiment("x")


def test_failure_classification() -> None:
    assert [status_is_failure(s) for s in (500, 503, 429, 408)] == [True] * 4
    assert [status_is_failure(s) for s in (400, 401, 404, 422)] == [False] * 4
    with pytest.raises(ServiceFailure):
        parse_sentiment({"label": "great", "score": 0.1, "confidence": 0.9})
    with pytest.raises(ServiceFailure):
        parse_sentiment({"label": "positive", "score": 2, "confidence": 0.9})
    assert parse_sentiment({"label": "neutral", "score": 0, "confidence": 1}).score == 0.0


def test_lexicon_sentiment() -> None:
    assert score_text("strong gains")["label"] == "positive"
    assert score_text("not good")["label"] == "negative"
    assert score_text("the meeting is on tuesday")["label"] == "neutral"


class Clock:
    def __init__(self) -> None:
        self.now_ms = 0.0

    def __call__(self) -> float:
        return self.now_ms


async def failing() -> str:
    raise ServiceFailure("down")


def breaker(clock: Clock, observer: RecordingObserver, threshold: int = 1) -> CircuitBreaker:
    return CircuitBreaker(
        "svc",
        failure_threshold=threshold,
        reset_timeout_ms=1_000,
        observer=observer,
        clock_ms=clock,
    )


async def test_a_late_success_does_not_close_an_open_breaker() -> None:
    clock, observer, release = Clock(), RecordingObserver(), asyncio.Event()
    guard = breaker(clock, observer)

    async def slow() -> str:
        await release.wait()
        return "late"

    late = asyncio.create_task(guard.call(slow, lambda: "fallback"))
    await asyncio.sleep(0)
    assert await guard.call(failing, lambda: "fallback") == "fallback"
    release.set()
    assert await late == "late"
    assert guard.state == "open"


async def test_a_cancelled_trial_frees_the_half_open_slot() -> None:
    clock, observer = Clock(), RecordingObserver()
    guard = breaker(clock, observer)
    await guard.call(failing, lambda: "fallback")
    clock.now_ms = 1_000
    trial = asyncio.create_task(guard.call(asyncio.Event().wait, lambda: True))
    await asyncio.sleep(0)
    assert await guard.call(failing, lambda: "rejected") == "rejected"
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert guard.state == "half_open"

    async def works() -> str:
        return "ok"

    assert await guard.call(works, lambda: "fallback") == "ok"
    assert guard.state == "closed"


async def test_an_unexpected_error_is_raised_and_not_counted() -> None:
    observer = RecordingObserver()
    guard = breaker(Clock(), observer)

    async def buggy() -> str:
        raise KeyError("our bug")

    with pytest.raises(KeyError):
        await guard.call(buggy, lambda: "fallback")
    assert guard.state == "closed"
    assert observer.outcomes == ["failure"]


def test_breaker_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("svc", failure_threshold=0, reset_timeout_ms=1)
    with pytest.raises(ValueError, match="reset_timeout_ms"):
        CircuitBreaker("svc", failure_threshold=1, reset_timeout_ms=0)


async def test_in_memory_twins() -> None:
    news = InMemoryNewsAI(answers={"great": Sentiment("positive", 0.9, 0.8)})
    assert (await news.sentiment("great")).label == "positive"
    assert (await news.sentiment("other")).label == "neutral"
    news.available = False
    assert await news.sentiment("great") == neutral_fallback()
    assert news.texts == ["great", "other", "great"]
    share = InMemoryShareAPI()
    first = await share.publish("twitter", "hi", "round-1:twitter")
    assert (first.post_id, first.fallback) == ("twitter-1", False)
    share.available = False
    assert (await share.publish("twitter", "hi", "round-2:twitter")).post_id.startswith(
        "fallback-twitter-"
    )
    assert len(share.posts) == 2


async def test_in_memory_share_posts_once_per_key() -> None:
    share = InMemoryShareAPI()
    first = await share.publish("twitter", "hi", "round-1:twitter")
    assert await share.publish("twitter", "hi", "round-1:twitter") == first
    assert share.posts == [(first, "hi")]
    share.available = False
    assert (await share.publish("mastodon", "hi", "round-1:mastodon")).fallback
    share.available = True
    real = await share.publish("mastodon", "hi", "round-1:mastodon")
    assert (real.post_id, real.fallback) == ("mastodon-3", False)
    assert await share.publish("mastodon", "hi", "round-1:mastodon") == real
    assert len(share.posts) == 3
