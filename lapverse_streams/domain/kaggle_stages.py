"""The Kaggle pipeline's rules: the burn-rate gate, which stage follows which, what it emits."""

from __future__ import annotations

from lapverse_streams.clients.kaggle import NO_CREDENTIALS, Stage, StageOutcome
from lapverse_streams.domain.batch import Outbound
from lapverse_streams.events.champion_models import ChampionCommand, KaggleOutcome, KaggleStage
from lapverse_streams.events.codec import encode_event

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
    """An evaluation that reached the merge threshold: the rollout may go to 100 %."""
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


def merge_command(data: KaggleStage, outcome: StageOutcome, now_ms: int) -> ChampionCommand:
    """The merge as a command for the promotion it evaluated (the governor decides the flag)."""
    score = outcome.detail.get("score")
    return ChampionCommand(
        command_id=f"{data.competition_id}:merge",
        tenant=data.tenant,
        family=data.family,
        action="merge",
        variant=data.champion,
        sequence=data.sequence or 0,  # a stage queued before sequences were kept is stale
        actor="kaggle",
        reason=f"Kaggle notebook score {score} ≥ the merge threshold",
        requested_at_ms=now_ms,
    )


def stage_outputs(
    stage: Stage, data: KaggleStage, outcome: StageOutcome, attempts: int, now_ms: int
) -> list[Outbound]:
    """The stage's outcome on `kaggle`; then a merge command on `commands` and the next request."""
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
    event = encode_event(short, f"{cid}:{short}", tenant, result, now_ms, SOURCE)
    outputs = [Outbound("kaggle", key, event, [])]
    if merges(outcome):
        command = merge_command(data, outcome, now_ms)
        event = encode_event(
            "champion.command", command.command_id, tenant, command, now_ms, SOURCE
        )
        outputs.append(Outbound("commands", tenant.encode(), event, []))
    following = next_stage(outcome)
    if following is not None:
        request = f"kaggle.{following}"
        event = encode_event(request, f"{cid}:{request}", tenant, data, now_ms, SOURCE)
        outputs.append(Outbound("kaggle", key, event, []))
    return outputs
