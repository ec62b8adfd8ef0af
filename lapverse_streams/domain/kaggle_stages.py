"""The Kaggle pipeline's rules: the burn-rate gate, which stage follows which, what it emits."""

from __future__ import annotations

from typing import Any

from lapverse_streams.clients.kaggle import NO_CREDENTIALS, Stage, StageOutcome
from lapverse_streams.domain.batch import Outbound
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import FlagConfig, KaggleOutcome, KaggleStage

SOURCE = "/lapverse/kaggle"
STAGES: tuple[Stage, ...] = ("sync", "evaluate", "promote")
FOLLOWS: dict[Stage, Stage] = {"sync": "evaluate", "evaluate": "promote"}
NO_KERNEL = "no notebook to evaluate (set LAPVERSE_KAGGLE_KERNEL to owner/slug)"


def requested_stage(short: str) -> Stage | None:
    """The stage a `kaggle.<stage>` request names; None for outcomes and other events."""
    kind, _, stage = short.partition(".")
    if kind != "kaggle":
        return None
    return next((s for s in STAGES if s == stage), None)


def burn_gate(burn_rate: float) -> str | None:
    """Why no stage may run at this burn rate (the tenant is spending its error budget)."""
    return f"burn rate {burn_rate:.2f} ≥ 1" if burn_rate >= 1 else None


def without_kernel(has_credentials: bool) -> StageOutcome:
    """The evaluate stage when no notebook is configured."""
    return StageOutcome("evaluate", "skipped", NO_KERNEL if has_credentials else NO_CREDENTIALS)


def merges(outcome: StageOutcome) -> bool:
    """An evaluation that reached the merge threshold: the champion flag goes to 100 %."""
    completed = outcome.stage == "evaluate" and outcome.status == "completed"
    return completed and outcome.detail.get("merge") is True


def next_stage(outcome: StageOutcome) -> Stage | None:
    """The stage to request after `outcome`, or None where the pipeline stops.

    A stage skipped for lack of credentials lets the next one record its own skip; any other
    skip (the burn-rate gate, no notebook) stops, as do failures and unmerged evaluations.
    """
    if outcome.stage not in FOLLOWS or outcome.status == "failed":
        return None
    if outcome.status == "skipped" and outcome.reason != NO_CREDENTIALS:
        return None
    if outcome.stage == "evaluate" and outcome.status == "completed" and not merges(outcome):
        return None
    return FOLLOWS[outcome.stage]


def outcome_reason(outcome: StageOutcome) -> str | None:
    """The outcome's reason; an evaluation that does not merge says why the pipeline stops."""
    completed = outcome.stage == "evaluate" and outcome.status == "completed"
    if completed and not merges(outcome) and outcome.reason is None:
        score, threshold = outcome.detail.get("score"), outcome.detail.get("threshold", 0.85)
        return f"notebook score {score} is below the merge threshold {threshold}"
    return outcome.reason


def merged_flag(champion: str) -> dict[str, Any]:
    """flagd string flag serving the champion to every targeting key (the 100 % rollout)."""
    return {"state": "ENABLED", "variants": {champion: champion}, "defaultVariant": champion}


def stage_outputs(
    stage: Stage, data: KaggleStage, outcome: StageOutcome, attempts: int, now_ms: int
) -> list[Outbound]:
    """The stage's outcome on `kaggle`; then the merged flag on `flags` and the next request."""
    cid, tenant, key = data.competition_id, data.tenant, data.competition_id.encode()
    result = KaggleOutcome(
        competition_id=cid,
        tenant=tenant,
        stage=stage,
        status=outcome.status,
        reason=outcome_reason(outcome),
        attempts=attempts,
        detail=outcome.detail,
        tags=data.tags,
        finished_at_ms=now_ms,
    )
    short = f"kaggle.{stage}.{outcome.status}"
    event = envelope(short, f"{cid}:{short}", tenant, result, now_ms, SOURCE)
    outputs = [Outbound("kaggle", key, encode(event), [])]
    if merges(outcome):
        flag = FlagConfig(flag_key=data.flag_key, definition=merged_flag(data.champion))
        flag_id = f"{data.flag_key}:merged:{cid}"
        event = envelope("flag.configured", flag_id, data.flag_key, flag, now_ms, SOURCE)
        outputs.append(Outbound("flags", data.flag_key.encode(), encode(event), []))
    following = next_stage(outcome)
    if following is not None:
        request = f"kaggle.{following}"
        event = envelope(request, f"{cid}:{request}", tenant, data, now_ms, SOURCE)
        outputs.append(Outbound("kaggle", key, encode(event), []))
    return outputs
