"""Pydantic models of the champion and Kaggle events: the rollout's story, and its stages."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lapverse_streams.events.models import (
    FAMILY_PATTERN,
    TENANT_ID_PATTERN,
    Evidence,
    FinOpsTags,
    Model,
)

RolloutState = Literal["canary", "ramping", "full", "pinned", "rolled-back"]
ChampionAction = Literal["pin", "unpin", "rollback", "tick", "merge"]
VARIANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ChampionPromoted(Model):
    """champion.promoted: a challenger replaced the incumbent, with the evidence.

    `sequence` numbers every event of the tenant's family on lapverse-champions (1, 2, ...);
    `previous` is the champion before this one. Evidence keys are camelCase; the snake_case
    keys of events written before are renamed on decoding.
    """

    tenant: str
    family: str
    champion: str
    previous: str | None = None
    baseline: str
    sequence: int = Field(ge=1)
    competition_id: str
    evidence: Evidence
    flag_key: str
    rollout_percent: int
    state: RolloutState = "canary"
    tags: FinOpsTags
    promoted_at_ms: int


class ChampionChanged(Model):
    """champion.stepped / .rolled-back / .pinned / .unpinned: the rollout moved, and why.

    `champion` serves `rolloutPercent` % of targeting keys and `baseline` the rest; `previous`
    is the champion before this event; `promotionSequence` the promotion the rollout belongs
    to; `actor` who decided (the governor, Kaggle, or the operator named in the command).
    """

    tenant: str
    family: str
    champion: str
    previous: str | None = None
    baseline: str = ""
    sequence: int = Field(ge=1)
    promotion_sequence: int = Field(ge=0)
    state: RolloutState
    rollout_percent: int = Field(ge=0, le=100)
    reason: str
    cause: str  # a short label: step, merge, burn-rate, lost-lead, operator, pin, unpin
    actor: str
    command_id: str | None = None
    flag_key: str
    tags: FinOpsTags
    changed_at_ms: int


class ChampionCommand(Model):
    """champion.command (internal, lapverse-champion-commands, keyed by tenant).

    An operator's pin / unpin / rollback, a Kaggle merge of the promotion `sequence`, or a
    rollout tick for the champion event `sequence`: a command whose sequence is not the
    current one is stale and changes nothing.
    """

    command_id: str = Field(min_length=1, max_length=128)
    tenant: str = Field(min_length=1, max_length=128, pattern=TENANT_ID_PATTERN)
    family: str = Field(pattern=FAMILY_PATTERN)
    action: ChampionAction
    variant: str | None = Field(default=None, pattern=VARIANT_PATTERN)
    sequence: int | None = Field(default=None, ge=0)
    actor: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=1000)
    requested_at_ms: int


class KaggleStage(Model):
    """kaggle.sync / kaggle.evaluate / kaggle.promote: one stage of a promotion's pipeline."""

    competition_id: str
    tenant: str
    family: str
    champion: str
    scores: dict[str, float]
    evidence: Evidence = Field(default_factory=dict)
    burn_rate: float
    flag_key: str
    sequence: int | None = Field(default=None, ge=1)  # the promotion's; None before it was kept
    tags: FinOpsTags
    requested_at_ms: int


class KaggleOutcome(Model):
    """kaggle.<stage>.completed / .skipped / .failed: what a stage did, and why."""

    competition_id: str
    tenant: str
    stage: Literal["sync", "evaluate", "promote"]
    status: Literal["completed", "skipped", "failed"]
    reason: str | None = None
    attempts: int = 0
    detail: dict[str, Any] = Field(default_factory=dict)
    tags: FinOpsTags
    finished_at_ms: int
