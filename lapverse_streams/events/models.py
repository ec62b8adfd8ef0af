"""Pydantic models of every event's `data` and of the CloudEvents envelope."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

APPLICATION = "lapverse-monitoring"
MAX_IDEMPOTENCY_KEY_LEN = 255
# A tenant id starts with a letter or digit (so never `.` or `..`), then letters, digits, `_.-`.
TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class Model(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Complexity(StrEnum):
    """Task complexity; drives the cost multiplier."""

    SIMPLE = "simple"
    INTERMEDIATE = "intermediate"
    ADVANCED = "advanced"
    EXPERT = "expert"


class Priority(StrEnum):
    """Scheduling priority of a task."""

    LOW = "low"
    NORMAL = "normal"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class FinOpsTags(Model):
    """FinOps tags carried by every event and ledger entry."""

    application: str = APPLICATION
    environment: str
    tenant_id: str
    cost_center: str
    owner: str
    version: str


class Requirements(Model):
    """What the task needs; only complexity is priced."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True
    )
    complexity: Complexity = Complexity.SIMPLE


class TaskRequest(Model):
    """The body of POST /api/v2/tasks and the request part of task.requested."""

    type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    priority: Priority = Priority.NORMAL
    description: str = Field(default="", max_length=10_000)
    tenant: str = Field(min_length=1, max_length=128, pattern=TENANT_ID_PATTERN)
    platforms: list[str] = Field(default_factory=list, max_length=32)
    cost_center: str = Field(default="default", min_length=1, max_length=128)
    requirements: Requirements = Field(default_factory=Requirements)


class TaskRequested(TaskRequest):
    """task.requested: a request plus the tags the gateway stamped (optional for producers)."""

    tags: FinOpsTags | None = None


class DecisionReason(StrEnum):
    """Why admission decided as it did, in the spec's order."""

    ACCEPTED = "accepted"
    FINGERPRINT_MISMATCH = "fingerprint_mismatch"
    FLAG_DISABLED = "flag_disabled"
    BUDGET_EXHAUSTED = "budget_exhausted"
    MARGIN_EXCEEDED = "margin_exceeded"
    UNKNOWN_TENANT = "unknown_tenant"
    UNKNOWN_FAMILY = "unknown_family"
    INVALID_REQUEST = "invalid_request"
    RATE_LIMITED = "rate_limited"


class RateLimitState(Model):
    """A tenant's token bucket when a request was over its limit (for the RateLimit headers)."""

    limit: int  # the burst: requests allowed at once
    remaining: int
    reset_s: int  # seconds until a request would be allowed again
    window_s: int  # seconds the bucket takes to refill from empty


class TaskDecision(Model):
    """task.accepted / task.rejected."""

    task_id: str
    idempotency_key: str
    status: Literal["accepted", "rejected"]
    reason: DecisionReason
    http_status: int
    detail: str
    retry_after_s: int | None = None
    rate_limit: RateLimitState | None = None
    cost_estimate_micros: int
    request: TaskRequest
    tags: FinOpsTags
    decided_at_ms: int


class TaskResult(Model):
    """task.completed / task.failed."""

    task_id: str
    status: Literal["completed", "failed"]
    type: str
    cost_center: str
    duration_ms: int
    attempts: int
    cost_micros: int
    result: dict[str, Any] | None = None
    error: str | None = None
    tags: FinOpsTags
    finished_at_ms: int


class TaskStarted(Model):
    """task.started, on the internal lapverse-task-progress: an executor took the task."""

    task_id: str
    type: str
    cost_center: str
    tags: FinOpsTags
    started_at_ms: int


MAX_MRR_MICROS = 10**15  # one billion USD a month


class ApiKeyInfo(Model):
    """What the admin API shows of one API key: never the key, only its hash's id."""

    key_id: str  # the first 12 hex digits of the key's sha256
    created_at_ms: int
    last4: str = Field(max_length=4)


class TenantConfig(Model):
    """tenant.configured on the compacted lapverse-tenants topic."""

    tenant_id: str = Field(min_length=1, max_length=128, pattern=TENANT_ID_PATTERN)
    mrr_micros: int = Field(ge=0, le=MAX_MRR_MICROS)
    slo_target: float = Field(default=0.99, gt=0, lt=1)
    slo_window_days: int = Field(default=30, ge=1, le=365)
    latency_objective_ms: int = Field(default=30_000, ge=1)
    owner: str = Field(default="unknown", min_length=1, max_length=128)
    api_key_hashes: tuple[str, ...] = ()
    api_keys: tuple[ApiKeyInfo, ...] = ()
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=1_000_000, allow_inf_nan=False)
    burst: int | None = Field(default=None, ge=1, le=1_000_000)
    tags: FinOpsTags

    @field_validator("api_key_hashes")
    @classmethod
    def _hex_hashes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(len(h) != 64 for h in value):
            raise ValueError("api key hashes are sha256 hex digests")
        return value


class FlagConfig(Model):
    """flag.configured on the compacted lapverse-flags topic (flagd flag definition)."""

    flag_key: str = Field(min_length=1, max_length=200)
    definition: dict[str, Any]


FAMILY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class CompetitionRequest(Model):
    """The body of POST /api/v2/self-compete and the request part of competition.requested."""

    tenant: str = Field(min_length=1, max_length=128, pattern=TENANT_ID_PATTERN)
    content: str = Field(default="", max_length=10_000)
    platforms: list[str] = Field(default_factory=list, max_length=32)
    priority: Priority = Priority.NORMAL
    cost_center: str = Field(default="default", min_length=1, max_length=128)
    competitors: list[str] | None = Field(default=None, min_length=2, max_length=32)
    family: str = Field(default="forecast", pattern=FAMILY_PATTERN)
    input: dict[str, Any] | None = None

    @field_validator("competitors")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("competitors must be distinct")
        return value


class CompetitionRequested(CompetitionRequest):
    """competition.requested: a round request plus the tags the gateway stamped."""

    tags: FinOpsTags | None = None


class CompetitionDecision(Model):
    """competition.accepted / competition.rejected (on lapverse-task-decisions)."""

    competition_id: str
    idempotency_key: str
    status: Literal["accepted", "rejected"]
    reason: DecisionReason
    http_status: int
    detail: str
    retry_after_s: int | None = None
    rate_limit: RateLimitState | None = None
    cost_estimate_micros: int
    variant_cost_micros: int
    competitors: list[str]
    deadline_ms: int
    request: CompetitionRequest
    tags: FinOpsTags
    decided_at_ms: int


class VariantRun(Model):
    """variant.run: one competitor of a round, keyed by competition id."""

    competition_id: str
    tenant: str
    family: str
    variant: str
    competitors: list[str]
    input: dict[str, Any]
    deadline_ms: int
    cost_micros: int
    content: str = ""
    platforms: list[str] = Field(default_factory=list)
    tags: FinOpsTags


class SharedPost(Model):
    """Where the champion's output went; `fallback` marks a post id Share API never made."""

    platform: str
    post_id: str
    url: str | None = None
    fallback: bool = False


class VariantResultEvent(Model):
    """variant.result: one competitor's backtest score (or why it has none)."""

    competition_id: str
    tenant: str
    family: str
    variant: str
    competitors: list[str]
    deadline_ms: int
    status: Literal["ok", "failed", "timeout"]
    score: float | None = None
    cost_micros: int
    duration_ms: int
    output: dict[str, Any] | None = None
    error: str | None = None
    tags: FinOpsTags
    finished_at_ms: int


class VariantSummary(Model):
    """One variant's line in a completed round."""

    status: Literal["ok", "failed", "timeout", "missing"]
    score: float | None = None
    cost_micros: int = 0
    duration_ms: int = 0
    error: str | None = None


class CompetitionJoined(Model):
    """competition.joined (internal, lapverse-competition-joins): the joined round."""

    competition_id: str
    tenant: str
    family: str
    competitors: list[str]
    variants: dict[str, VariantSummary]
    champion: str | None = None
    champion_output: dict[str, Any] | None = None
    missing: list[str]
    cost_micros: int
    posts: list[SharedPost] = Field(default_factory=list)
    tags: FinOpsTags
    joined_at_ms: int


# Evidence keys written in snake_case before they were camelCase; renamed when decoded.
SNAKE_EVIDENCE_KEYS = {
    "baseline_kind": "baselineKind",
    "min_rounds": "minRounds",
    "challenger_wins": "challengerWins",
    "baseline_wins": "baselineWins",
    "win_rates": "winRates",
    "interval_level": "intervalLevel",
    "interval_kind": "intervalKind",
    "start_round": "startRound",
    "burn_rate": "burnRate",
    "max_burn_rate": "maxBurnRate",
}
OPAQUE_EVIDENCE_KEYS = frozenset({"winRates"})  # keys below these are variant names


def camel_keys(value: dict[str, Any]) -> dict[str, Any]:
    """Promotion evidence with the old snake_case keys renamed (variant names left alone)."""
    renamed: dict[str, Any] = {}
    for key, item in value.items():
        name = SNAKE_EVIDENCE_KEYS.get(key, key)
        nested = isinstance(item, dict) and name not in OPAQUE_EVIDENCE_KEYS
        renamed[name] = camel_keys(item) if nested else item
    return renamed


# Promotion evidence, with the keys of events written before camelCase renamed on decoding.
Evidence = Annotated[dict[str, Any], AfterValidator(camel_keys)]


class CompetitionCompleted(Model):
    """competition.completed: scores, champion, cost and the promotion decision of a round."""

    competition_id: str
    idempotency_key: str
    tenant: str
    family: str
    status: Literal["completed"] = "completed"
    scores: dict[str, float]
    variants: dict[str, VariantSummary]
    champion: str | None = None
    champion_output: dict[str, Any] | None = None
    missing: list[str]
    cost_micros: int
    cost_estimate_micros: int
    promotion: Evidence
    posts: list[SharedPost] = Field(default_factory=list)
    tags: FinOpsTags
    completed_at_ms: int


class WorkerStatus(Model):
    """worker.status (internal, compacted lapverse-worker-status): one worker's heartbeat."""

    worker_id: str
    breakers: dict[str, str]
    consumer_lag: dict[str, int]
    table_keys: dict[str, int]
    assigned_partitions: int
    updated_at_ms: int


def type_name(short: str) -> str:
    """CloudEvents type of a short event name: io.lapverse.<name>.v1."""
    return f"io.lapverse.{short}.v1"


def short_name(ce_type: str) -> str | None:
    """Inverse of type_name; None when the type is not ours."""
    if ce_type.startswith("io.lapverse.") and ce_type.endswith(".v1"):
        return ce_type[len("io.lapverse.") : -len(".v1")]
    return None


class CloudEvent(BaseModel):
    """CloudEvents 1.0 structured-mode envelope."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=MAX_IDEMPOTENCY_KEY_LEN)
    source: str = Field(min_length=1)
    type: str
    subject: str | None = None
    time: str
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]
