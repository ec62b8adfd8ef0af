"""Pydantic models of every event's `data` and of the CloudEvents envelope."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

APPLICATION = "lapverse-monitoring"
MAX_IDEMPOTENCY_KEY_LEN = 255


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
    tenant: str = Field(min_length=1, max_length=128)
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


class TaskDecision(Model):
    """task.accepted / task.rejected."""

    task_id: str
    idempotency_key: str
    status: Literal["accepted", "rejected"]
    reason: DecisionReason
    http_status: int
    detail: str
    retry_after_s: int | None = None
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


class TenantConfig(Model):
    """tenant.configured on the compacted lapverse-tenants topic."""

    tenant_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    mrr_micros: int = Field(ge=0)
    slo_target: float = Field(default=0.99, gt=0, lt=1)
    slo_window_days: int = Field(default=30, ge=1, le=365)
    latency_objective_ms: int = Field(default=30_000, ge=1)
    owner: str = Field(default="unknown", min_length=1, max_length=128)
    api_key_hashes: tuple[str, ...] = ()
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


EVENT_TYPES: dict[str, type[Model]] = {
    "task.requested": TaskRequested,
    "task.accepted": TaskDecision,
    "task.rejected": TaskDecision,
    "task.completed": TaskResult,
    "task.failed": TaskResult,
    "tenant.configured": TenantConfig,
    "flag.configured": FlagConfig,
}


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
