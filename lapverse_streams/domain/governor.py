"""The governor: admission, ledger and burn over a batch, against its key-value stores.

A batch reads and writes the stores through one `BatchState` (domain/state.py): each record's
writes are journaled, and each key the batch changed is written once, at the end. Every write
is a whole value per key, so each write is atomic; each value records the source offset it
last applied, so a batch redelivered after a crash applies nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

from lapverse_streams.domain import arena, champions, idempotency
from lapverse_streams.domain.admission import Policy, Verdict, admit
from lapverse_streams.domain.arena import Referee, fan_out
from lapverse_streams.domain.batch import (
    FINAL,
    REDRIVEN,
    REPLAYED,
    REPLY_ONLY,
    REQUEST_ID,
    SOURCE,
    BatchOutput,
    Inbound,
    Intake,
    Invalid,
    Mark,
    Observation,
    Outbound,
    check_routing,
    dead_letter,
)
from lapverse_streams.domain.budget import Burn
from lapverse_streams.domain.ledger import Ledger
from lapverse_streams.domain.pricing import billing_period, task_estimate_micros
from lapverse_streams.domain.promotion import (
    PromotionPolicy,
)
from lapverse_streams.domain.ratelimit import RateLimiter
from lapverse_streams.domain.rollout import RolloutPolicy
from lapverse_streams.domain.state import (
    BatchState,
    DedupRecord,
    DedupStore,
    Reservations,
    TableTx,
    Write,
)
from lapverse_streams.events.champion_models import ChampionCommand
from lapverse_streams.events.codec import (
    Headers,
    PoisonMessage,
    decode,
    encode_event,
    header,
    parse_data,
    trace_of,
)
from lapverse_streams.events.deadletter import reason_of
from lapverse_streams.events.models import (
    CompetitionJoined,
    DecisionReason,
    FinOpsTags,
    Model,
    TaskDecision,
    TaskRequest,
    TaskRequested,
    TaskResult,
    TenantConfig,
)
from lapverse_streams.variants.base import VariantFamily


@dataclass
class Governor:
    """Applies a batch of requests and results to the dedup, ledger and burn stores."""

    records: MutableMapping[str, DedupRecord]
    ledgers: MutableMapping[str, Ledger]
    burns: MutableMapping[str, Burn]
    tenants: Mapping[str, TenantConfig]
    flag_definitions: Mapping[str, dict[str, Any]]
    policy: Policy
    environment: str
    version: str
    retention_ms: int
    clock_ms: Callable[[], int]
    families: Mapping[str, VariantFamily] = field(default_factory=dict)
    evolutions: MutableMapping[str, Any] = field(default_factory=dict)
    promotion: PromotionPolicy = field(default_factory=PromotionPolicy)
    competition_deadline_ms: int = 30_000
    task_types: frozenset[str] | None = None  # types with a handler; None admits any type
    rollout: RolloutPolicy = field(default_factory=RolloutPolicy)

    reservations: Reservations = field(init=False)  # the dedup store's (domain/state.py)

    def __post_init__(self) -> None:
        if not isinstance(self.records, DedupStore):  # reservations follow the dedup store
            store = DedupStore(Reservations())
            store.update(self.records)
            self.records = store
        self.reservations = self.records.reservations
        self._state = BatchState(
            {
                "dedup": self.records,
                "ledger": self.ledgers,
                "burn": self.burns,
                "evolution": self.evolutions,
            }
        )
        self._journal = self._state.journal
        self._records: TableTx[DedupRecord] = self._state.table("dedup")
        self._ledgers: TableTx[Ledger] = self._state.table("ledger")
        self._burns: TableTx[Burn] = self._state.table("burn")
        self._limiter = RateLimiter(
            self.policy.rate_limit_per_s, self.policy.rate_limit_burst, self._journal
        )
        self._redriven_ms: dict[str, int] = {}  # in memory only: a restart redrives again

    def process(self, batch: list[Inbound]) -> BatchOutput:
        """Process records in order; a record that fails in any way becomes a dead letter.

        Each record's writes are journaled and undone if it fails, so a failed record leaves
        no write behind and the other records of the batch are decided as if it never came.
        """
        out = BatchOutput()
        for record in batch:
            mark = Mark.of(out)
            self._state.begin(record.partition)
            try:
                if record.source == "tasks":
                    self._on_task_request(record, out)
                elif record.source == "results":
                    self._on_result(record, out)
                elif record.source == "rounds":
                    self._on_round_request(record, out)
                elif record.source == "commands":
                    self._on_champion_command(record, out)
                else:
                    self._on_joined(record, out)
            except Exception as exc:  # any failure: one record must never cost the others
                self._state.rollback()
                mark.restore(out)
                reason, detail = reason_of(exc)
                out.records.append(dead_letter(record, reason, detail))
                out.observations.append(Observation("dead_letter", "", reason=reason))
            else:
                self._state.commit()
        out.writes = self._state.writes()
        return out

    def _ledger(self, tenant_id: str) -> Ledger:
        """The tenant's ledger, bound to its reservations and to the journal."""
        ledger = self.ledgers.get(tenant_id)
        if ledger is None:
            self._journal.note(self.ledgers, tenant_id)
            ledger = self.ledgers[tenant_id] = Ledger()
        ledger.reservations = self.reservations.of(tenant_id)
        ledger.journal = self._journal
        return ledger

    def _burn(self, tenant_id: str) -> Burn:
        """The tenant's burn record, bound to the journal."""
        burn = self.burns.get(tenant_id)
        if burn is None:
            self._journal.note(self.burns, tenant_id)
            burn = self.burns[tenant_id] = Burn()
        burn.journal = self._journal
        return burn

    def _on_task_request(self, record: Inbound, out: BatchOutput) -> None:
        event, short = decode(record.value)
        if short != "task.requested":
            raise PoisonMessage("unknown_type", f"{event.type} does not belong on the tasks topic")
        requested = parse_data(event, TaskRequested)
        check_routing(record, event, requested.tenant)
        request = TaskRequest.model_construct(  # validated once, as task.requested
            **{name: getattr(requested, name) for name in TaskRequest.model_fields}
        )
        tenant_id, key, now = request.tenant, event.id, self.clock_ms()
        task_id = idempotency.task_id(tenant_id, key)

        def decide(verdict: Verdict, estimate: int, tags: FinOpsTags) -> tuple[str, Model]:
            decision = TaskDecision(
                task_id=task_id,
                idempotency_key=key,
                status="accepted" if verdict.accepted else "rejected",
                reason=verdict.reason,
                http_status=verdict.http_status,
                detail=verdict.detail,
                retry_after_s=verdict.retry_after_s,
                rate_limit=verdict.rate_limit,
                cost_estimate_micros=estimate,
                request=request,
                tags=tags,
                decided_at_ms=now,
            )
            return ("task.accepted" if verdict.accepted else "task.rejected"), decision

        invalid = None
        if self.task_types is not None and request.type not in self.task_types:
            known = ", ".join(sorted(self.task_types)) or "none"
            invalid = Invalid(
                DecisionReason.INVALID_REQUEST,
                400,
                f"task type {request.type!r} has no handler (known: {known})",
            )
        intake = Intake(
            kind="task",
            request_id=task_id,
            tenant_id=tenant_id,
            key=key,
            fingerprint=idempotency.fingerprint(request),
            estimate_micros=task_estimate_micros(request.requirements.complexity),
            flag_key=f"task-type.{request.type}",
            subject=f"task type {request.type!r}",
            label=request.type if invalid is None else "invalid",
            cost_center=request.cost_center,
            now_ms=now,
            decide=decide,
            invalid=invalid,
        )
        self._admit(intake, record, out)

    def _admit(self, intake: Intake, record: Inbound, out: BatchOutput) -> None:
        """Validation, idempotency, rate limit, then admission and the decision (and fan-out).

        Invalid and rate-limited requests are answered but not remembered: they burn no
        budget, and the same key may be tried again once the request is fixed or allowed.
        """
        tenant_id, now = intake.tenant_id, intake.now_ms
        reply_headers = _reply_headers(record.headers)
        tenant = self.tenants.get(tenant_id)
        if intake.invalid is not None:
            invalid = intake.invalid
            verdict = Verdict(invalid.reason, invalid.http_status, invalid.detail)
            self._answer_only(intake, tenant, verdict, reply_headers, record, out)
            return
        existing = self.records.get(intake.request_id)
        if existing is not None and self._expired(existing, now):
            existing = None
        if existing is not None:
            self._repeat(intake, existing, record, reply_headers, out)
            return
        limited = self._limiter.check(tenant, now) if tenant is not None else None
        if limited is not None:
            self._answer_only(intake, tenant, limited, reply_headers, record, out)
            out.observations.append(Observation("rate_limited", tenant_id, intake.label))
            return
        verdict = admit(
            tenant_id,
            intake.subject,
            intake.flag_key,
            tenant,
            self.flag_definitions.get(intake.flag_key),
            self._ledger(tenant_id),
            self._burn(tenant_id),
            intake.estimate_micros,
            now,
            self.policy,
        )
        tags = self.tags(tenant, tenant_id, intake.cost_center)
        short_type, decision = intake.decide(verdict, intake.estimate_micros, tags)
        event_id = f"{intake.request_id}:decision"
        encoded = encode_event(short_type, event_id, tenant_id, decision, now, SOURCE)
        # An accepted record is the request's reservation (domain/state.py: Reservations).
        self._records[intake.request_id] = DedupRecord(
            kind=intake.kind,
            request_id=intake.request_id,
            tenant=tenant_id,
            key=intake.key,
            fingerprint=intake.fingerprint,
            status="accepted" if verdict.accepted else "rejected",
            decision=encoded,
            origin=(record.partition, record.offset),
            created_ms=now,
            estimate=intake.estimate_micros,
            type=intake.label,
            cost_center=intake.cost_center,
        )
        out.records.append(Outbound("decisions", tenant_id.encode(), encoded, reply_headers))
        if verdict.accepted and intake.kind == "competition":
            out.records.extend(fan_out(encoded, reply_headers))
        out.observations.append(
            Observation(
                f"{intake.kind}_decision",
                tenant_id if tenant else UNKNOWN,
                intake.label,
                verdict.reason.value,
            )
        )

    def _answer_only(
        self,
        intake: Intake,
        tenant: TenantConfig | None,
        verdict: Verdict,
        reply_headers: Headers,
        record: Inbound,
        out: BatchOutput,
    ) -> None:
        """A rejection that is sent but not stored (a reply, not a decision to replay)."""
        tags = self.tags(tenant, intake.tenant_id, intake.cost_center)
        short_type, decision = intake.decide(verdict, 0, tags)
        event_id = f"{intake.request_id}:{verdict.reason.value}:{record.partition}:{record.offset}"
        ce = encode_event(short_type, event_id, intake.tenant_id, decision, intake.now_ms, SOURCE)
        out.records.append(
            Outbound(
                "decisions",
                intake.tenant_id.encode(),
                ce,
                [*reply_headers, (REPLY_ONLY, b"true")],
            )
        )
        out.observations.append(
            Observation(
                f"{intake.kind}_decision",
                intake.tenant_id if tenant else UNKNOWN,
                intake.label,
                verdict.reason.value,
            )
        )

    def _repeat(
        self,
        intake: Intake,
        existing: DedupRecord,
        record: Inbound,
        reply_headers: Headers,
        out: BatchOutput,
    ) -> None:
        """A known id: 422 for another payload, else replay (a redelivery re-sends its outputs).

        Nothing is re-applied: the stored record is the request's reservation already.
        """
        tenant_id = intake.tenant_id
        redelivered = existing.origin == (record.partition, record.offset)
        if existing.fingerprint != intake.fingerprint:
            verdict = Verdict(
                DecisionReason.FINGERPRINT_MISMATCH,
                422,
                "Idempotency-Key was already used with a different payload",
            )
            tenant = self.tenants.get(tenant_id)
            self._answer_only(intake, tenant, verdict, reply_headers, record, out)
            return
        flag = [] if redelivered else [(REPLAYED, b"true")]
        out.records.append(
            Outbound("decisions", tenant_id.encode(), existing.decision, reply_headers + flag)
        )
        if redelivered and existing.status == "accepted" and intake.kind == "competition":
            out.records.extend(fan_out(existing.decision, reply_headers))
        if not redelivered:
            out.observations.append(Observation("replay", tenant_id, intake.label, "replayed"))

    def _on_result(self, record: Inbound, out: BatchOutput) -> None:
        event, short = decode(record.value)
        if short not in FINAL_TYPES:
            raise PoisonMessage(
                "unknown_type", f"{event.type} does not belong on the results topic"
            )
        result = parse_data(event, TaskResult)
        existing = self.records.get(result.task_id)
        if existing is None:
            raise PoisonMessage("unknown_task", f"no admitted task {result.task_id}")
        tenant_id = existing.tenant
        check_routing(record, event, tenant_id)
        if existing.status in FINAL and existing.final_offset != record.offset:
            out.observations.append(Observation("duplicate_result", tenant_id, existing.type))
            return
        if existing.status == "rejected":
            raise PoisonMessage("unknown_task", f"task {result.task_id} was rejected")
        cost = result.cost_micros if result.status == "completed" else 0
        self._records[result.task_id] = replace(
            existing,
            status=result.status,
            final_offset=record.offset,
            cost=cost,
            result=result.result,
            error=result.error,
            duration_ms=result.duration_ms,
            finished_ms=result.finished_at_ms,
        )
        ledger = self._ledger(tenant_id)
        if not ledger.already_applied("results", record.offset):
            period = billing_period(result.finished_at_ms)
            ledger.charge(cost, period, existing.cost_center)
            ledger.mark("results", record.offset)
            self._ledgers.touch(tenant_id)
        burn = self._burn(tenant_id)
        if not burn.already_applied("results", record.offset):
            tenant = self.tenants.get(tenant_id)
            objective = tenant.latency_objective_ms if tenant else 30_000
            window = tenant.slo_window_days if tenant else 30
            good = result.status == "completed" and result.duration_ms <= objective
            burn.record(result.finished_at_ms, good, "results", record.offset, window)
            self._burns.touch(tenant_id)
        out.observations.append(
            Observation("result", tenant_id, existing.type, result.status, result.duration_ms)
        )

    def _on_round_request(self, record: Inbound, out: BatchOutput) -> None:
        event, short = decode(record.value)
        if short != "competition.requested":
            raise PoisonMessage(
                "unknown_type", f"{event.type} does not belong on the self-compete topic"
            )
        now = self.clock_ms()
        intake = arena.round_intake(event, now, self.families, self.competition_deadline_ms)
        check_routing(record, event, intake.tenant_id)
        self._admit(intake, record, out)

    def _on_joined(self, record: Inbound, out: BatchOutput) -> None:
        event, short = decode(record.value)
        if short != "competition.joined":
            raise PoisonMessage("unknown_type", f"{event.type} does not belong on the joins topic")
        joined = parse_data(event, CompetitionJoined)
        existing = self.records.get(joined.competition_id)
        if existing is None or existing.kind != "competition":
            raise PoisonMessage("unknown_competition", f"no round {joined.competition_id}")
        tenant_id = existing.tenant
        check_routing(record, event, tenant_id)
        if joined.tenant != tenant_id:
            raise PoisonMessage("key_mismatch", "data.tenant is not the round's tenant")
        referee = Referee(self._state, self.promotion, self.rollout)
        referee.settle(
            joined,
            existing,
            record,
            self.tenants.get(tenant_id),
            self._ledger(tenant_id),
            self._burn(tenant_id),
            self.clock_ms(),
            out,
        )

    def _on_champion_command(self, record: Inbound, out: BatchOutput) -> None:
        """An operator's, Kaggle's or the rollout timer's command: domain/champions.py decides."""
        event, short = decode(record.value)
        if short != "champion.command":
            raise PoisonMessage("unknown_type", f"{event.type} is not a champion command")
        command = parse_data(event, ChampionCommand)
        check_routing(record, event, command.tenant)
        tenant = self.tenants.get(command.tenant)
        if tenant is None:
            raise PoisonMessage("unknown_tenant", f"no tenant {command.tenant!r}")
        now = self.clock_ms()
        rate = champions.tenant_burn_rate(self._burn(command.tenant), tenant, now)
        tags = self.tags(tenant, command.tenant, "platform")
        champions.apply_command(
            command, record, self._state.table("evolution"), rate, tags, now, self.rollout, out
        )

    def redrive(self, now_ms: int, older_than_ms: int, partitions: set[int]) -> list[Outbound]:
        """Re-send decisions of accepted tasks whose result is overdue, so a lost one is rerun."""
        out = []
        for tenant_id, reserved in self.reservations.tenants():
            for task_id in list(reserved.items):
                record = self.records.get(task_id)
                if record is None or record.status != "accepted":
                    continue
                if record.origin[0] not in partitions:
                    continue
                if self._redriven_ms.get(task_id, record.created_ms) + older_than_ms > now_ms:
                    continue
                self._redriven_ms[task_id] = now_ms  # a restart redrives again, harmlessly
                marked = [(REDRIVEN, b"1")]
                if record.kind == "competition":
                    out.extend(fan_out(record.decision, marked))
                else:
                    out.append(Outbound("decisions", tenant_id.encode(), record.decision, marked))
        return out

    def forget_expired(self, now_ms: int, partitions: set[int]) -> list[Write]:
        """Delete final records past the retention period; return the deletes to send.

        Only records of `partitions` (this worker's) go; unfinished work is never forgotten.
        """
        for key, record in list(self.records.items()):
            partition = record.origin[0]
            if partition in partitions and self._expired(record, now_ms):
                self._state.begin(partition)
                del self._records[key]
                self._redriven_ms.pop(key, None)
                self._state.commit()
        return self._state.writes()

    def _expired(self, existing: DedupRecord, now_ms: int) -> bool:
        return (
            existing.status in (*FINAL, "rejected")
            and existing.created_ms + self.retention_ms < now_ms
        )

    def tags(self, tenant: TenantConfig | None, tenant_id: str, cost_center: str) -> FinOpsTags:
        """FinOps tags for a tenant's event."""
        return FinOpsTags(
            environment=self.environment,
            tenant_id=tenant_id,
            cost_center=cost_center,
            owner=tenant.owner if tenant else "unknown",
            version=self.version,
        )


FINAL_TYPES = ("task.completed", "task.failed")


def _reply_headers(headers: Headers) -> Headers:
    request_id = header(headers, REQUEST_ID)
    out: Headers = [(REQUEST_ID, request_id.encode())] if request_id else []
    return out + trace_of(headers)


UNKNOWN = "unknown"  # the metric label of a tenant that is not configured
