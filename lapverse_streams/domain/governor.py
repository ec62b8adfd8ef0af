"""The governor: admission, ledger and burn over a batch, against three key-value stores.

Every store write is a whole value per key, so each write is atomic; each value records the
source offset it last applied, so a batch redelivered after a crash applies nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from lapverse_streams.domain import idempotency
from lapverse_streams.domain.admission import Policy, admit
from lapverse_streams.domain.budget import Burn
from lapverse_streams.domain.ledger import Ledger
from lapverse_streams.domain.pricing import billing_period, task_estimate_micros
from lapverse_streams.events.codec import (
    PoisonMessage,
    decode,
    encode,
    envelope,
    header,
    parse_data,
)
from lapverse_streams.events.models import (
    DecisionReason,
    FinOpsTags,
    TaskDecision,
    TaskRequest,
    TaskRequested,
    TaskResult,
    TenantConfig,
)

Headers = list[tuple[str, bytes]]
REQUEST_ID = "lapverse-request-id"
REPLAYED = "lapverse-replayed"
REPLY_ONLY = "lapverse-reply-only"
SOURCE = "/lapverse/governor"
FINAL = ("completed", "failed")


@dataclass(frozen=True)
class Inbound:
    """One consumed record."""

    source: str  # "tasks" or "results"
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True)
class Outbound:
    """One record to produce; `sink` names the topic role."""

    sink: str  # "decisions" or "dlq"
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True)
class Observation:
    """Something worth a metric: the agent turns these into counters."""

    kind: str  # decision, replay, result, duplicate_result, dead_letter
    tenant: str
    task_type: str = ""
    reason: str = ""
    duration_ms: int = 0


@dataclass
class BatchOutput:
    """What a batch produces: records to send, keys to write, observations."""

    records: list[Outbound] = field(default_factory=list)
    dirty_records: dict[str, int] = field(default_factory=dict)
    dirty_ledgers: dict[str, int] = field(default_factory=dict)
    dirty_burns: dict[str, int] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    burns: dict[str, Burn] = field(default_factory=dict)


@dataclass
class Governor:
    """Applies a batch of requests and results to the dedup, ledger and burn stores."""

    records: MutableMapping[str, Any]
    ledgers: MutableMapping[str, Any]
    burns: MutableMapping[str, Any]
    tenants: Mapping[str, TenantConfig]
    flag_definitions: Mapping[str, dict[str, Any]]
    policy: Policy
    environment: str
    version: str
    retention_ms: int
    clock_ms: Callable[[], int]

    def process(self, batch: list[Inbound]) -> BatchOutput:
        """Process records in order; poison records become dead letters."""
        out = BatchOutput()
        for record in batch:
            try:
                if record.source == "tasks":
                    self._on_request(record, out)
                else:
                    self._on_result(record, out)
            except PoisonMessage as exc:
                out.records.append(dead_letter(record, exc.reason, exc.detail))
                out.observations.append(Observation("dead_letter", "", reason=exc.reason))
        for tenant_id in out.dirty_ledgers:
            self.ledgers[tenant_id] = out.ledgers[tenant_id].to_json()
        for tenant_id in out.dirty_burns:
            self.burns[tenant_id] = out.burns[tenant_id].to_json()
        return out

    def _ledger(self, tenant_id: str, out: BatchOutput) -> Ledger:
        """The tenant's ledger, loaded once per batch."""
        if tenant_id not in out.ledgers:
            out.ledgers[tenant_id] = Ledger.from_json(self.ledgers.get(tenant_id))
        return out.ledgers[tenant_id]

    def _burn(self, tenant_id: str, out: BatchOutput) -> Burn:
        """The tenant's burn record, loaded once per batch."""
        if tenant_id not in out.burns:
            out.burns[tenant_id] = Burn.from_json(self.burns.get(tenant_id))
        return out.burns[tenant_id]

    def _on_request(self, record: Inbound, out: BatchOutput) -> None:
        event, short = decode(record.value)
        if short != "task.requested":
            raise PoisonMessage("unknown_type", f"{event.type} does not belong on the tasks topic")
        requested = parse_data(event, TaskRequested)
        if event.subject is not None and event.subject != requested.tenant:
            raise PoisonMessage("wrong_schema", "subject does not match data.tenant")
        request = TaskRequest.model_validate(requested.model_dump(exclude={"tags"}))
        tenant_id, key = request.tenant, event.id
        task_id = idempotency.task_id(tenant_id, key)
        fingerprint = idempotency.fingerprint(request)
        now = self.clock_ms()
        reply_headers = _reply_headers(record.headers)
        existing = self.records.get(task_id)
        if existing is not None and self._expired(existing, now):
            existing = None
        ledger = self._ledger(tenant_id, out)
        if existing is not None:
            redelivered = existing["origin"] == [record.partition, record.offset]
            if existing["fingerprint"] != fingerprint:
                out.records.append(
                    self._conflict(existing, request, key, record, now, reply_headers)
                )
                out.observations.append(
                    Observation("decision", tenant_id, request.type, "fingerprint_mismatch")
                )
                return
            if (
                redelivered
                and existing["status"] != "rejected"
                and not ledger.already_applied("tasks", record.offset)
            ):
                if existing["status"] not in FINAL:
                    ledger.reserve(task_id, existing["estimate"])
                ledger.mark("tasks", record.offset)
                out.dirty_ledgers[tenant_id] = record.partition
            flag = [] if redelivered else [(REPLAYED, b"true")]
            out.records.append(
                Outbound(
                    "decisions",
                    tenant_id.encode(),
                    existing["decision"].encode(),
                    reply_headers + flag,
                )
            )
            if not redelivered:
                out.observations.append(Observation("replay", tenant_id, request.type, "replayed"))
            return
        tenant = self.tenants.get(tenant_id)
        estimate = task_estimate_micros(request.requirements.complexity)
        burn = self._burn(tenant_id, out)
        verdict = admit(
            request,
            tenant,
            self.flag_definitions.get(f"task-type.{request.type}"),
            ledger,
            burn,
            estimate,
            now,
            self.policy,
        )
        decision = TaskDecision(
            task_id=task_id,
            idempotency_key=key,
            status="accepted" if verdict.accepted else "rejected",
            reason=verdict.reason,
            http_status=verdict.http_status,
            detail=verdict.detail,
            retry_after_s=verdict.retry_after_s,
            cost_estimate_micros=estimate,
            request=request,
            tags=requested.tags or self.tags(tenant, tenant_id, request.cost_center),
            decided_at_ms=now,
        )
        short_type = "task.accepted" if verdict.accepted else "task.rejected"
        encoded = encode(
            envelope(short_type, f"{task_id}:decision", tenant_id, decision, now, SOURCE)
        ).decode()
        self.records[task_id] = {
            "taskId": task_id,
            "tenant": tenant_id,
            "key": key,
            "fingerprint": fingerprint,
            "status": decision.status,
            "decision": encoded,
            "origin": [record.partition, record.offset],
            "createdMs": now,
            "estimate": estimate,
            "type": request.type,
            "costCenter": request.cost_center,
        }
        out.dirty_records[task_id] = record.partition
        if verdict.accepted:
            ledger.reserve(task_id, estimate).mark("tasks", record.offset)
            out.dirty_ledgers[tenant_id] = record.partition
        out.records.append(
            Outbound("decisions", tenant_id.encode(), encoded.encode(), reply_headers)
        )
        out.observations.append(
            Observation("decision", tenant_id, request.type, verdict.reason.value)
        )

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
        tenant_id = existing["tenant"]
        if existing["status"] in FINAL and existing.get("finalOffset") != record.offset:
            out.observations.append(Observation("duplicate_result", tenant_id, existing["type"]))
            return
        if existing["status"] == "rejected":
            raise PoisonMessage("unknown_task", f"task {result.task_id} was rejected")
        cost = result.cost_micros if result.status == "completed" else 0
        self.records[result.task_id] = {
            **existing,
            "status": result.status,
            "finalOffset": record.offset,
            "cost": cost,
            "result": result.result,
            "error": result.error,
            "durationMs": result.duration_ms,
            "finishedMs": result.finished_at_ms,
        }
        out.dirty_records[result.task_id] = record.partition
        ledger = self._ledger(tenant_id, out)
        if not ledger.already_applied("results", record.offset):
            period = billing_period(result.finished_at_ms)
            ledger.settle(result.task_id, cost, period, existing["costCenter"])
            ledger.mark("results", record.offset)
            out.dirty_ledgers[tenant_id] = record.partition
        burn = self._burn(tenant_id, out)
        if record.offset > burn.applied:
            tenant = self.tenants.get(tenant_id)
            objective = tenant.latency_objective_ms if tenant else 30_000
            window = tenant.slo_window_days if tenant else 30
            good = result.status == "completed" and result.duration_ms <= objective
            burn.record(result.finished_at_ms, good, record.offset, window)
            out.dirty_burns[tenant_id] = record.partition
        out.observations.append(
            Observation("result", tenant_id, existing["type"], result.status, result.duration_ms)
        )

    def redrive(self, now_ms: int, older_than_ms: int, partitions: set[int]) -> list[Outbound]:
        """Re-send decisions of accepted tasks whose result is overdue, so a lost one is rerun."""
        out = []
        for tenant_id, raw in list(self.ledgers.items()):
            for task_id in Ledger.from_json(raw).reserved:
                record = self.records.get(task_id)
                if record is None or record["status"] != "accepted":
                    continue
                if record["origin"][0] not in partitions:
                    continue
                if record.get("redrivenMs", record["createdMs"]) + older_than_ms > now_ms:
                    continue
                record["redrivenMs"] = (
                    now_ms  # in memory only: a restart redrives again, harmlessly
                )
                decision = record["decision"].encode()
                out.append(Outbound("decisions", tenant_id.encode(), decision, []))
        return out

    def _expired(self, existing: Mapping[str, Any], now_ms: int) -> bool:
        return (
            existing["status"] in (*FINAL, "rejected")
            and existing["createdMs"] + self.retention_ms < now_ms
        )

    def _conflict(
        self,
        existing: Mapping[str, Any],
        request: TaskRequest,
        key: str,
        record: Inbound,
        now: int,
        reply_headers: Headers,
    ) -> Outbound:
        tenant = self.tenants.get(request.tenant)
        decision = TaskDecision(
            task_id=existing["taskId"],
            idempotency_key=key,
            status="rejected",
            reason=DecisionReason.FINGERPRINT_MISMATCH,
            http_status=422,
            detail="Idempotency-Key was already used with a different payload",
            cost_estimate_micros=0,
            request=request,
            tags=self.tags(tenant, request.tenant, request.cost_center),
            decided_at_ms=now,
        )
        ce = envelope(
            "task.rejected",
            f"{existing['taskId']}:conflict:{record.partition}:{record.offset}",
            request.tenant,
            decision,
            now,
            SOURCE,
        )
        return Outbound(
            "decisions",
            request.tenant.encode(),
            encode(ce),
            [*reply_headers, (REPLY_ONLY, b"true")],
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
    traceparent = header(headers, "traceparent")
    if traceparent:
        out.append(("traceparent", traceparent.encode()))
    return out


def dead_letter(record: Inbound, reason: str, detail: str) -> Outbound:
    """The original bytes and headers, with where they came from and why they failed."""
    extra: Headers = [
        ("lapverse-dlq-source", record.source.encode()),
        ("lapverse-dlq-partition", str(record.partition).encode()),
        ("lapverse-dlq-offset", str(record.offset).encode()),
        ("lapverse-dlq-reason", reason.encode()),
        ("lapverse-dlq-error", detail[:1000].encode()),
    ]
    return Outbound("dlq", record.key, record.value, list(record.headers) + extra)
