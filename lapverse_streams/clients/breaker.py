"""Circuit breaker with fallbacks, its observer hook, and what counts as a service failure."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Literal, Protocol, Self, TypeVar

import aiohttp
import orjson

log = logging.getLogger(__name__)
T = TypeVar("T")
BreakerState = Literal["closed", "open", "half_open"]
CallOutcome = Literal["success", "failure", "fallback", "rejected"]


class ServiceFailure(Exception):
    """The service is down, slow or overloaded: counted by the breaker."""


class RequestRefused(Exception):
    """The service answered but refused our request (a 4xx: our bug); not counted."""


class ServiceObserver(Protocol):
    """Hooks a client reports to; metrics and /api/status implement them."""

    def on_call(self, service: str, outcome: CallOutcome, duration_ms: float) -> None:
        """One call finished: the service's answer, a fallback, a rejection or an exception."""
        ...

    def on_state(self, service: str, state: BreakerState) -> None:
        """The breaker of `service` entered `state`."""
        ...


class NullObserver:
    """Reports nowhere."""

    def on_call(self, service: str, outcome: CallOutcome, duration_ms: float) -> None:
        """Ignore the call."""

    def on_state(self, service: str, state: BreakerState) -> None:
        """Ignore the state change."""


@dataclass
class RecordingObserver:
    """Keeps every report in memory, for tests."""

    calls: list[tuple[str, CallOutcome, float]] = field(default_factory=list)
    states: list[tuple[str, BreakerState]] = field(default_factory=list)

    def on_call(self, service: str, outcome: CallOutcome, duration_ms: float) -> None:
        """Record the call."""
        self.calls.append((service, outcome, duration_ms))

    def on_state(self, service: str, state: BreakerState) -> None:
        """Record the state change."""
        self.states.append((service, state))

    @property
    def outcomes(self) -> list[CallOutcome]:
        """Outcomes in call order."""
        return [outcome for _, outcome, _ in self.calls]


def _monotonic_ms() -> float:
    return time.monotonic() * 1000


# Not circuitbreaker.CircuitBreaker (2.1.3): under asyncio it lets every half-open call through,
# a cancelled call closes the circuit, a late answer from before it opened closes it again, and
# it registers breakers in a process-global dict. Same states and consecutive-failure threshold.
class CircuitBreaker:
    """Opens after N consecutive failures; after the reset timeout one trial call decides."""

    def __init__(
        self,
        service: str,
        *,
        failure_threshold: int,
        reset_timeout_ms: float,
        observer: ServiceObserver | None = None,
        clock_ms: Callable[[], float] = _monotonic_ms,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout_ms <= 0:
            raise ValueError("reset_timeout_ms must be positive")
        self.service = service
        self.failure_threshold = failure_threshold
        self.reset_timeout_ms = reset_timeout_ms
        self._observer = observer or NullObserver()
        self._clock_ms = clock_ms
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at_ms = 0.0
        # bumped on every transition: answers to calls admitted in an earlier state are stale
        self._generation = 0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """Current state; open turns half-open here, once the reset timeout has passed."""
        if self._state == "open" and self._clock_ms() - self._opened_at_ms >= self.reset_timeout_ms:
            self._enter("half_open")
        return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    async def call(self, operation: Callable[[], Awaitable[T]], fallback: Callable[[], T]) -> T:
        """Await `operation()`, or return `fallback()` when rejected or the service failed."""
        started = time.perf_counter()
        generation = self._admit()
        if generation is None:
            self._report("rejected", started)
            return fallback()
        try:
            result = await operation()
        except ServiceFailure as exc:
            log.warning("%s failed: %s", self.service, exc)
            self._record_failure(generation)
            self._report("fallback", started)
            return fallback()
        except RequestRefused as exc:
            log.error("%s refused our request: %s", self.service, exc)
            self._record_success(generation)  # it answered, so it is up
            self._report("fallback", started)
            return fallback()
        except Exception:
            self._release(generation)
            self._report("failure", started)
            raise
        except BaseException:  # cancelled: says nothing about the service
            self._release(generation)
            raise
        self._record_success(generation)
        self._report("success", started)
        return result

    def _admit(self) -> int | None:
        """The generation the call runs in, or None when the call is rejected."""
        state = self.state
        if state == "open" or (state == "half_open" and self._trial_in_flight):
            return None
        if state == "half_open":
            self._trial_in_flight = True
        return self._generation

    def _record_success(self, generation: int) -> None:
        if generation != self._generation:
            return
        if self._state == "half_open":
            self._enter("closed")
        self._failures = 0

    def _record_failure(self, generation: int) -> None:
        if generation != self._generation:
            return
        self._failures += 1
        if self._state == "half_open" or self._failures >= self.failure_threshold:
            self._enter("open")

    def _release(self, generation: int) -> None:
        """A call ended without a verdict: free the half-open trial slot."""
        if generation == self._generation and self._state == "half_open":
            self._trial_in_flight = False

    def _enter(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._trial_in_flight = False
        if state == "open":
            self._opened_at_ms = self._clock_ms()
        if state == "closed":
            self._failures = 0
        log.log(logging.WARNING if state == "open" else logging.INFO, "%s: %s", self.service, state)
        self._observer.on_state(self.service, state)

    def _report(self, outcome: CallOutcome, started: float) -> None:
        self._observer.on_call(self.service, outcome, (time.perf_counter() - started) * 1000)


def status_is_failure(status: int) -> bool:
    """5xx, 408 and 429 mean the service is in trouble; other 4xx mean we sent a bad request."""
    return status >= 500 or status in (408, 429)


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    payload: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST JSON plus `headers`: the 2xx JSON object, else ServiceFailure or RequestRefused."""
    try:
        async with session.post(url, json=payload, headers=headers) as response:
            body = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ServiceFailure(f"POST {url}: {type(exc).__name__} {exc}".rstrip()) from exc
    if not 200 <= status < 300:
        detail = f"POST {url}: HTTP {status} {body[:200]!r}"
        raise ServiceFailure(detail) if status_is_failure(status) else RequestRefused(detail)
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServiceFailure(f"POST {url}: answer is not JSON") from exc
    if not isinstance(answer, dict):
        raise ServiceFailure(f"POST {url}: answer is not a JSON object")
    return answer


class GuardedClient:
    """An aiohttp session plus a breaker: the lifecycle every service client shares.

    A subclass names its service and its default limits; each can be overridden per client.
    """

    service: ClassVar[str]
    default_timeout_ms: ClassVar[int]
    default_failure_threshold: ClassVar[int]
    default_reset_timeout_ms: ClassVar[int]

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_ms: int | None = None,
        failure_threshold: int | None = None,
        reset_timeout_ms: int | None = None,
        observer: ServiceObserver | None = None,
    ) -> None:
        timeout_ms = self.default_timeout_ms if timeout_ms is None else timeout_ms
        if failure_threshold is None:
            failure_threshold = self.default_failure_threshold
        if reset_timeout_ms is None:
            reset_timeout_ms = self.default_reset_timeout_ms
        if timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive")
        self.base_url = base_url.rstrip("/")
        self.timeout_ms = timeout_ms
        self._api_key = api_key
        self._breaker = CircuitBreaker(
            self.service,
            failure_threshold=failure_threshold,
            reset_timeout_ms=reset_timeout_ms,
            observer=observer,
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker guarding every call."""
        return self._breaker

    @property
    def state(self) -> BreakerState:
        """The breaker's state, for /api/status."""
        return self._breaker.state

    async def start(self) -> None:
        """Open the HTTP session (sends the bearer key, times out after `timeout_ms`)."""
        if self._session is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            timeout = aiohttp.ClientTimeout(total=self.timeout_ms / 1000)
            self._session = aiohttp.ClientSession(headers=headers, timeout=timeout)

    async def stop(self) -> None:
        """Close the HTTP session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _post(
        self, path: str, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """post_json to `base_url + path` on the started session, with extra `headers`."""
        if self._session is None:
            raise RuntimeError(f"{type(self).__name__}.start() was not called")
        return await post_json(self._session, self.base_url + path, payload, headers)
