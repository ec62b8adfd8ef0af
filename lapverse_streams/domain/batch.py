"""What a governor batch consumes and produces: records in, records out, observations.

Also the checks and cut-backs every record goes through: routing, dead letters, and the
mark a failed record's output is cut back to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lapverse_streams.domain.admission import Verdict
from lapverse_streams.events.codec import Headers, PoisonMessage
from lapverse_streams.events.deadletter import Consumed, letter
from lapverse_streams.events.models import CloudEvent, DecisionReason, FinOpsTags, Model

if TYPE_CHECKING:
    from lapverse_streams.domain.state import Write

REQUEST_ID = "lapverse-request-id"
REPLAYED = "lapverse-replayed"
REDRIVEN = "lapverse-redriven"  # a decision sent again because its result is overdue
REPLY_ONLY = "lapverse-reply-only"
SOURCE = "/lapverse/governor"
FINAL = ("completed", "failed")


@dataclass(frozen=True)
class Inbound:
    """One consumed record."""

    source: str  # "tasks", "results", "rounds" (self-compete requests) or "joins"
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    topic: str = ""  # the full topic name, for dead letters


@dataclass(frozen=True)
class Outbound:
    """One record to produce; `sink` names the topic role."""

    sink: str  # decisions, dlq, runs, completions, champions, flags or kaggle
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True)
class Observation:
    """Something worth a metric: the agent turns these into counters."""

    kind: str  # task_decision, competition_decision, replay, result, competition, ...
    tenant: str
    task_type: str = ""
    reason: str = ""
    duration_ms: int = 0
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Invalid:
    """Why a request can never be admitted as sent (validation, before idempotency)."""

    reason: DecisionReason
    http_status: int
    detail: str


@dataclass(frozen=True)
class Intake:
    """A request of either kind, reduced to what idempotency and admission need."""

    kind: str  # "task" or "competition"
    request_id: str  # task id or competition id
    tenant_id: str
    key: str
    fingerprint: str
    estimate_micros: int
    flag_key: str
    subject: str  # what the flag gates, for messages
    label: str  # task type or competition family, for metrics
    cost_center: str
    now_ms: int
    decide: Callable[[Verdict, int, FinOpsTags], tuple[str, Model]]
    invalid: Invalid | None = None


@dataclass
class BatchOutput:
    """What a batch produces: records to send, the keys it wrote, observations."""

    records: list[Outbound] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)  # one per key changed, at the end
    observations: list[Observation] = field(default_factory=list)


def dead_letter(record: Inbound, reason: str, detail: str) -> Outbound:
    """The governor's dead letter of a record, by the one dead-letter policy."""
    consumed = Consumed(
        record.topic or record.source,
        record.partition,
        record.offset,
        record.key,
        record.value,
        record.headers,
    )
    dead = letter("governor", consumed, reason, detail)
    return Outbound("dlq", dead.key, dead.value, dead.headers)


def check_routing(record: Inbound, event: CloudEvent, tenant_id: str) -> None:
    """The record key and the CloudEvent subject must both name the tenant of the data.

    A record keyed by one tenant with another's data would land on the wrong partition and
    split that tenant's ledger; it is dead-lettered instead.
    """
    if record.key != tenant_id.encode() or event.subject != tenant_id:
        raise PoisonMessage(
            "key_mismatch", "the record key, the CloudEvent subject and the tenant must agree"
        )


@dataclass(frozen=True)
class Mark:
    """How far a batch's output had got before a record, to cut back to if it fails.

    (The record's table writes are undone by the batch state's journal.)
    """

    records: int
    observations: int

    @classmethod
    def of(cls, out: BatchOutput) -> Mark:
        """The output's current lengths."""
        return cls(len(out.records), len(out.observations))

    def restore(self, out: BatchOutput) -> None:
        """Drop what was added since."""
        del out.records[self.records :]
        del out.observations[self.observations :]
