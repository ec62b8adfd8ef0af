"""Every event type's short name and the model of its `data`."""

from __future__ import annotations

from lapverse_streams.events.champion_models import (
    ChampionChanged,
    ChampionCommand,
    ChampionPromoted,
    KaggleOutcome,
    KaggleStage,
)
from lapverse_streams.events.models import (
    CompetitionCompleted,
    CompetitionDecision,
    CompetitionJoined,
    CompetitionRequested,
    FlagConfig,
    Model,
    TaskDecision,
    TaskRequested,
    TaskResult,
    TaskStarted,
    TenantConfig,
    VariantResultEvent,
    VariantRun,
    WorkerStatus,
)

EVENT_TYPES: dict[str, type[Model]] = {
    "task.requested": TaskRequested,
    "task.accepted": TaskDecision,
    "task.rejected": TaskDecision,
    "task.started": TaskStarted,
    "task.completed": TaskResult,
    "task.failed": TaskResult,
    "tenant.configured": TenantConfig,
    "flag.configured": FlagConfig,
    "competition.requested": CompetitionRequested,
    "competition.accepted": CompetitionDecision,
    "competition.rejected": CompetitionDecision,
    "variant.run": VariantRun,
    "variant.result": VariantResultEvent,
    "competition.joined": CompetitionJoined,
    "competition.completed": CompetitionCompleted,
    "champion.promoted": ChampionPromoted,
    **{
        f"champion.{change}": ChampionChanged
        for change in ("stepped", "rolled-back", "pinned", "unpinned")
    },
    "champion.command": ChampionCommand,
    "worker.status": WorkerStatus,
    **{f"kaggle.{stage}": KaggleStage for stage in ("sync", "evaluate", "promote")},
    **{
        f"kaggle.{stage}.{status}": KaggleOutcome
        for stage in ("sync", "evaluate", "promote")
        for status in ("completed", "skipped", "failed")
    },
}
