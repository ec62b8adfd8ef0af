"""Kaggle pipeline rules and the stage runner: gate, retries, breaker, what each stage emits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from agents.kaggle import StageRunner
from lapverse_streams.clients.breaker import CircuitBreaker
from lapverse_streams.clients.kaggle import (
    NO_CREDENTIALS,
    InMemoryKagglePipeline,
    KaggleUnavailable,
    Stage,
    StageOutcome,
)
from lapverse_streams.domain.kaggle_stages import (
    NO_KERNEL,
    burn_gate,
    next_stage,
    outcome_reason,
    requested_stage,
    stage_outputs,
)
from lapverse_streams.events.champion_models import KaggleStage
from lapverse_streams.events.codec import decode
from lapverse_streams.events.models import FinOpsTags

KERNEL = "lapverse/forecast-notebook"
TAGS = FinOpsTags(
    environment="test", tenant_id="acme", cost_center="marketing", owner="qa", version="0.1.0"
)


def stage_data(burn_rate: float = 0.5) -> KaggleStage:
    """A promotion's stage request."""
    return KaggleStage(
        competition_id="c1",
        tenant="acme",
        family="forecast",
        champion="balanced",
        scores={"balanced": 0.91, "aggressive": 0.84},
        burn_rate=burn_rate,
        flag_key="champion.acme.forecast",
        sequence=3,
        tags=TAGS,
        requested_at_ms=1_000,
    )


def runner(
    pipeline: Any,
    *,
    kernel: str = KERNEL,
    has_credentials: bool = True,
    breaker: CircuitBreaker | None = None,
) -> StageRunner:
    """A runner with a 1 ms retry base, so retries cost nothing."""
    breaker = breaker or CircuitBreaker("kaggle", failure_threshold=100, reset_timeout_ms=60_000)
    return StageRunner(pipeline, breaker, kernel, has_credentials, 3, 1)


@dataclass
class Flaky(InMemoryKagglePipeline):
    """Unavailable for the first `outages` syncs, then the in-memory pipeline."""

    outages: int = 0
    calls: list[str] = field(default_factory=list)

    async def sync(self, competition: Mapping[str, Any], tags: Mapping[str, str]) -> StageOutcome:
        self.calls.append("sync")
        if len(self.calls) <= self.outages:
            raise KaggleUnavailable("kaggle sync: HTTP 503 injected")
        return await super().sync(competition, tags)


def test_only_stage_requests_are_stages() -> None:
    assert [requested_stage(s) for s in ("kaggle.sync", "kaggle.evaluate", "kaggle.promote")] == [
        "sync",
        "evaluate",
        "promote",
    ]
    assert requested_stage("kaggle.sync.completed") is None
    assert requested_stage("task.requested") is None


def test_the_burn_gate_closes_at_one() -> None:
    assert burn_gate(0.99) is None
    assert burn_gate(1.0) == "burn rate 1.00 ≥ 1"
    assert burn_gate(2.345) == "burn rate 2.35 ≥ 1"


def merged(score: float) -> StageOutcome:
    return StageOutcome("evaluate", "completed", None, {"score": score, "merge": score >= 0.85})


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (StageOutcome("sync", "completed"), "evaluate"),
        (merged(0.9), "promote"),
        (merged(0.8), None),
        (StageOutcome("promote", "completed"), None),
        (StageOutcome("sync", "skipped", NO_CREDENTIALS), "evaluate"),
        (StageOutcome("evaluate", "skipped", NO_CREDENTIALS), "promote"),
        (StageOutcome("promote", "skipped", NO_CREDENTIALS), None),
        (StageOutcome("sync", "skipped", "burn rate 1.20 ≥ 1"), None),
        (StageOutcome("evaluate", "skipped", NO_KERNEL), None),
        (StageOutcome("sync", "failed", "HTTP 503"), None),
        (StageOutcome("evaluate", "failed", "notebook status is running"), None),
    ],
)
def test_what_follows_a_stage(outcome: StageOutcome, expected: Stage | None) -> None:
    assert next_stage(outcome) == expected


def test_an_unmerged_evaluation_says_why_the_pipeline_stops() -> None:
    unmerged = StageOutcome("evaluate", "completed", None, {"score": 0.8, "merge": False})
    assert outcome_reason(unmerged) == "notebook score 0.8 is below the merge threshold 0.85"
    assert outcome_reason(merged(0.9)) is None
    assert outcome_reason(StageOutcome("sync", "skipped", NO_CREDENTIALS)) == NO_CREDENTIALS


def decoded(raw: bytes | None) -> tuple[str, dict[str, Any]]:
    event, short = decode(raw)
    return short, event.model_dump(mode="json")


def test_a_merged_evaluation_emits_its_outcome_a_merge_command_then_the_promote_request() -> None:
    detail = {"kernel": KERNEL, "score": 0.9, "merge": True, "threshold": 0.85}
    outcome = StageOutcome("evaluate", "completed", None, detail)

    outputs = stage_outputs("evaluate", stage_data(), outcome, 2, 5_000)

    assert [(o.sink, o.key) for o in outputs] == [
        ("kaggle", b"c1"),
        ("commands", b"acme"),
        ("kaggle", b"c1"),
    ]
    (short, result), (command_short, command), (next_short, request) = map(
        decoded, (o.value for o in outputs)
    )
    assert (short, result["id"], result["subject"]) == (
        "kaggle.evaluate.completed",
        "c1:kaggle.evaluate.completed",
        "acme",
    )
    assert result["data"] == {
        "competitionId": "c1",
        "tenant": "acme",
        "stage": "evaluate",
        "status": "completed",
        "attempts": 2,
        "detail": detail,
        "tags": TAGS.model_dump(mode="json", by_alias=True),
        "finishedAtMs": 5_000,
    }
    # Kaggle writes no flag: the governor decides on the merge of promotion 3 (domain/rollout.py)
    assert (command_short, command["id"], command["subject"]) == (
        "champion.command",
        "c1:merge",
        "acme",
    )
    assert command["data"] == {
        "commandId": "c1:merge",
        "tenant": "acme",
        "family": "forecast",
        "action": "merge",
        "variant": "balanced",
        "sequence": 3,
        "actor": "kaggle",
        "reason": "Kaggle notebook score 0.9 ≥ the merge threshold",
        "requestedAtMs": 5_000,
    }
    assert (next_short, request["id"]) == ("kaggle.promote", "c1:kaggle.promote")
    assert request["data"] == stage_data().model_dump(mode="json", by_alias=True)


def test_a_skipped_sync_for_burn_emits_only_its_outcome() -> None:
    outcome = StageOutcome("sync", "skipped", "burn rate 1.20 ≥ 1")
    outputs = stage_outputs("sync", stage_data(1.2), outcome, 0, 5_000)
    assert len(outputs) == 1
    short, result = decoded(outputs[0].value)
    assert (short, result["data"]["reason"]) == ("kaggle.sync.skipped", "burn rate 1.20 ≥ 1")


async def test_without_credentials_every_stage_is_skipped_after_one_call() -> None:
    stages = runner(InMemoryKagglePipeline(has_credentials=False), has_credentials=False)
    for stage in ("sync", "evaluate", "promote"):
        outcome, attempts = await stages.run(stage, stage_data())
        assert (outcome.status, outcome.reason, attempts) == ("skipped", NO_CREDENTIALS, 1)


async def test_a_missing_kernel_skips_evaluate_without_a_call() -> None:
    offline = runner(
        InMemoryKagglePipeline(has_credentials=False), kernel="", has_credentials=False
    )
    assert (await offline.run("evaluate", stage_data()))[0].reason == NO_CREDENTIALS
    online = runner(InMemoryKagglePipeline(), kernel="")
    outcome, attempts = await online.run("evaluate", stage_data())
    assert (outcome.status, outcome.reason, attempts) == ("skipped", NO_KERNEL, 0)


async def test_a_burn_rate_of_one_skips_before_any_call() -> None:
    pipeline = InMemoryKagglePipeline()
    outcome, attempts = await runner(pipeline).run("sync", stage_data(burn_rate=1.0))
    assert (outcome.status, outcome.reason, attempts) == ("skipped", "burn rate 1.00 ≥ 1", 0)
    assert pipeline.synced == []


async def test_an_outage_is_retried_until_kaggle_answers() -> None:
    pipeline = Flaky(outages=2)
    outcome, attempts = await runner(pipeline).run("sync", stage_data())
    assert (outcome.status, attempts) == ("completed", 3)
    assert len(pipeline.synced) == 1
    assert pipeline.synced[0][1]["tenantId"] == "acme"


async def test_a_lasting_outage_fails_after_three_retries_with_its_cause() -> None:
    pipeline = Flaky(outages=10)
    outcome, attempts = await runner(pipeline).run("sync", stage_data())
    assert (outcome.status, outcome.reason, attempts) == (
        "failed",
        "kaggle sync: HTTP 503 injected",
        4,
    )
    assert len(pipeline.calls) == 4


async def test_a_refusal_fails_at_once() -> None:
    pipeline = InMemoryKagglePipeline(scores={})  # the notebook is unknown: a 404
    outcome, attempts = await runner(pipeline).run("evaluate", stage_data())
    assert outcome.status == "failed"
    assert "HTTP 404" in (outcome.reason or "")
    assert attempts == 1


async def test_an_open_breaker_is_retried_then_named_as_the_cause() -> None:
    breaker = CircuitBreaker("kaggle", failure_threshold=2, reset_timeout_ms=60_000)
    pipeline = Flaky(outages=10)
    outcome, attempts = await runner(pipeline, breaker=breaker).run("sync", stage_data())
    assert (outcome.status, attempts) == ("failed", 4)
    assert outcome.reason == "the kaggle circuit breaker is open"
    assert len(pipeline.calls) == 2  # the breaker opened after two failures
    assert breaker.state == "open"


async def test_a_merge_and_promote_run_on_the_in_memory_pipeline() -> None:
    pipeline = InMemoryKagglePipeline(scores={KERNEL: 0.86})
    stages = runner(pipeline)
    evaluated, _ = await stages.run("evaluate", stage_data())
    assert next_stage(evaluated) == "promote"
    promoted, _ = await stages.run("promote", stage_data())
    assert promoted.status == "completed"
    assert pipeline.promoted == [{"champion": "balanced", "tenant": "acme", "family": "forecast"}]
