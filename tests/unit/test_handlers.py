"""Handler plug-ins: drills are off unless enabled, and a drill's requirements are bounded."""

from __future__ import annotations

from typing import Any

import pytest

from lapverse_streams.clients.news_ai import InMemoryNewsAI
from lapverse_streams.events.models import TaskRequest
from lapverse_streams.handlers import builtin
from lapverse_streams.handlers.base import DrillLimits, Services, load_handlers
from lapverse_streams.handlers.builtin import ChaosHandler


def services(max_sleep_ms: int = 5_000) -> Services:
    return Services(InMemoryNewsAI(), DrillLimits(max_sleep_ms=max_sleep_ms))


def chaos(**requirements: Any) -> TaskRequest:
    return TaskRequest(type="CHAOS", tenant="acme", requirements=requirements)


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds each drill asked to sleep (without sleeping)."""
    seconds: list[float] = []

    async def sleep(delay: float) -> None:
        seconds.append(delay)

    monkeypatch.setattr(builtin.asyncio, "sleep", sleep)
    return seconds


def test_drill_handlers_are_loaded_only_when_enabled() -> None:
    assert set(load_handlers(services())) == {"ANALYSIS", "NOOP"}
    assert set(load_handlers(services(), drills_enabled=True)) == {"ANALYSIS", "NOOP", "CHAOS"}


async def test_a_drills_sleep_is_capped_by_the_limit(slept: list[float]) -> None:
    handler = ChaosHandler(services(max_sleep_ms=250))
    outcome = await handler.run(chaos(sleepMs=10**9, failureRate=0))
    assert outcome.result == {"chaos": "survived"}
    await handler.run(chaos(sleepMs=100, failureRate=0))
    assert slept == [0.25, 0.1]


@pytest.mark.parametrize(
    "requirements",
    [
        {"sleepMs": -1},
        {"sleepMs": float("inf")},
        {"sleepMs": float("nan")},
        {"sleepMs": "1000"},
        {"sleepMs": True},
        {"failureRate": 2},
        {"failureRate": "always"},
        {"failAttempts": -3},
        {"failAttempts": {"n": 1}},
    ],
)
async def test_bad_drill_requirements_fail_the_task_without_sleeping(
    requirements: dict[str, Any], slept: list[float]
) -> None:
    with pytest.raises(ValueError, match="requirements"):
        await ChaosHandler(services()).run(chaos(**requirements))
    assert slept == []


async def test_fail_attempts_fails_that_many_attempts_of_the_same_task(slept: list[float]) -> None:
    handler = ChaosHandler(services())
    request = chaos(failAttempts=2)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="injected"):
            await handler.run(request)
    assert (await handler.run(request)).result == {"chaos": "survived", "failedAttempts": 2}
    other = chaos(failAttempts=2)
    with pytest.raises(RuntimeError, match="injected failure 1"):
        await handler.run(other)
    del request, other
    assert handler._attempts == {}  # forgotten with their requests
