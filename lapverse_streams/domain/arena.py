"""Self-compete rounds inside the governor: intake, fan-out, and what a settled round emits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from lapverse_streams.domain import idempotency
from lapverse_streams.domain import rollout as decider
from lapverse_streams.domain.admission import Verdict
from lapverse_streams.domain.batch import (
    SOURCE,
    BatchOutput,
    Inbound,
    Intake,
    Invalid,
    Observation,
    Outbound,
)
from lapverse_streams.domain.budget import Burn
from lapverse_streams.domain.champions import (
    champion_flag_key,
    change_outputs,
    evolution_key,
    observations,
    round_changes,
    tenant_burn_rate,
)
from lapverse_streams.domain.ledger import Ledger
from lapverse_streams.domain.pricing import billing_period
from lapverse_streams.domain.promotion import (
    Evolution,
    PromotionDecision,
    PromotionPolicy,
    apply,
    evaluate,
)
from lapverse_streams.domain.rollout import Change, Rollout, RolloutPolicy
from lapverse_streams.domain.self_compete import (
    InvalidCompetition,
    resolve,
    variant_cost_micros,
    variant_runs,
)
from lapverse_streams.domain.state import BatchState, DedupRecord
from lapverse_streams.events.champion_models import KaggleStage
from lapverse_streams.events.codec import (
    Headers,
    PoisonMessage,
    decode,
    encode_event,
    parse_data,
    trace_of,
)
from lapverse_streams.events.models import (
    CloudEvent,
    CompetitionCompleted,
    CompetitionDecision,
    CompetitionJoined,
    CompetitionRequest,
    CompetitionRequested,
    FinOpsTags,
    Model,
    TenantConfig,
)
from lapverse_streams.variants.base import VariantFamily


def round_intake(
    event: CloudEvent, now_ms: int, families: Mapping[str, VariantFamily], deadline_ms: int
) -> Intake:
    """A competition.requested event reduced to what admission needs (routing checked)."""
    requested = parse_data(event, CompetitionRequested)
    request = CompetitionRequest.model_validate(requested.model_dump(exclude={"tags"}))
    tenant_id, key = request.tenant, event.id
    competition_id = idempotency.competition_id(tenant_id, key)
    invalid: Invalid | None = None
    try:
        competitors = resolve(request, families).competitors
    except InvalidCompetition as exc:
        invalid = Invalid(exc.reason, exc.http_status, exc.detail)
        competitors = tuple(request.competitors or ())
    per_variant = variant_cost_micros()

    def decide(verdict: Verdict, estimate: int, tags: FinOpsTags) -> tuple[str, Model]:
        decision = CompetitionDecision(
            competition_id=competition_id,
            idempotency_key=key,
            status="accepted" if verdict.accepted else "rejected",
            reason=verdict.reason,
            http_status=verdict.http_status,
            detail=verdict.detail,
            retry_after_s=verdict.retry_after_s,
            rate_limit=verdict.rate_limit,
            cost_estimate_micros=estimate,
            variant_cost_micros=per_variant,
            competitors=list(competitors),
            deadline_ms=now_ms + deadline_ms,
            request=request,
            tags=tags,
            decided_at_ms=now_ms,
        )
        return ("competition.accepted" if verdict.accepted else "competition.rejected"), decision

    return Intake(
        kind="competition",
        request_id=competition_id,
        tenant_id=tenant_id,
        key=key,
        fingerprint=idempotency.fingerprint(request),
        estimate_micros=0 if invalid else per_variant * len(competitors),
        flag_key=f"family.{request.family}",
        subject=f"competition family {request.family!r}",
        label=request.family if invalid is None else "invalid",
        cost_center=request.cost_center,
        now_ms=now_ms,
        decide=decide,
        invalid=invalid,
    )


def fan_out(decision_json: bytes, headers: Headers) -> list[Outbound]:
    """The variant.run records of an accepted round, keyed by competition id."""
    event, _ = decode(decision_json)
    decision = parse_data(event, CompetitionDecision)
    trace = trace_of(headers)
    return [
        Outbound(
            "runs",
            run.competition_id.encode(),
            encode_event(
                "variant.run",
                f"{run.competition_id}:{run.variant}",
                run.tenant,
                run,
                decision.decided_at_ms,
                SOURCE,
            ),
            list(trace),
        )
        for run in variant_runs(decision)
    ]


def settled_outputs(
    record: DedupRecord,
    joined: CompetitionJoined,
    decision: PromotionDecision,
    changes: list[Change],
    burn_rate: float,
    now_ms: int,
) -> list[Outbound]:
    """competition.completed; then each champion change (event and flag); Kaggle on a promotion."""
    tenant = record.tenant
    scores = {
        name: summary.score
        for name, summary in joined.variants.items()
        if summary.status == "ok" and summary.score is not None
    }
    completed = CompetitionCompleted(
        competition_id=joined.competition_id,
        idempotency_key=record.key,
        tenant=tenant,
        family=joined.family,
        scores=scores,
        variants=joined.variants,
        champion=joined.champion,
        champion_output=joined.champion_output,
        missing=joined.missing,
        cost_micros=joined.cost_micros,
        cost_estimate_micros=record.estimate,
        promotion={"decision": "promoted" if decision.promote else "kept", **decision.to_json()},
        posts=joined.posts,
        tags=joined.tags,
        completed_at_ms=now_ms,
    )
    event_id = f"{joined.competition_id}:completed"
    outputs = [
        Outbound(
            "completions",
            tenant.encode(),
            encode_event("competition.completed", event_id, tenant, completed, now_ms, SOURCE),
            [],
        )
    ]
    for change in changes:
        outputs.extend(change_outputs(joined.tenant, joined.family, change, joined.tags, now_ms))
        if change.kind == "promoted":
            sequence = change.rollout.sequence
            outputs.append(kaggle_sync(joined, decision, scores, burn_rate, sequence, now_ms))
    return outputs


def kaggle_sync(
    joined: CompetitionJoined,
    decision: PromotionDecision,
    scores: dict[str, float],
    burn_rate: float,
    sequence: int,
    now_ms: int,
) -> Outbound:
    """Queue the Kaggle pipeline of a promotion: its first stage, keyed by competition id."""
    assert decision.challenger is not None
    stage = KaggleStage(
        competition_id=joined.competition_id,
        tenant=joined.tenant,
        family=joined.family,
        champion=decision.challenger,
        scores=scores,
        evidence=decision.evidence,
        burn_rate=burn_rate,
        flag_key=champion_flag_key(joined.tenant, joined.family),
        sequence=sequence,
        tags=joined.tags,
        requested_at_ms=now_ms,
    )
    event_id = f"{joined.competition_id}:kaggle.sync"
    value = encode_event("kaggle.sync", event_id, joined.tenant, stage, now_ms, SOURCE)
    return Outbound("kaggle", joined.competition_id.encode(), value, [])


def promotion_outputs(
    joined: CompetitionJoined,
    decision: PromotionDecision,
    sequence: int,
    now_ms: int,
    policy: RolloutPolicy | None = None,
) -> list[Outbound]:
    """champion.promoted (number `sequence`) and the canary of the champion flag."""
    assert decision.challenger is not None
    before = Rollout(champion=decision.incumbent, sequence=sequence - 1)
    _, changes = round_changes(
        before, Evolution(), decision, joined.competition_id, 0.0, now_ms, policy or RolloutPolicy()
    )
    return [
        o
        for c in changes
        for o in change_outputs(joined.tenant, joined.family, c, joined.tags, now_ms)
    ]


@dataclass
class Referee:
    """Settles joined rounds in the governor: charge, burn, evolution, outputs; each once."""

    state: BatchState  # the governor's tables within the batch
    policy: PromotionPolicy
    rollout: RolloutPolicy = field(default_factory=RolloutPolicy)

    def settle(
        self,
        joined: CompetitionJoined,
        existing: DedupRecord,
        record: Inbound,
        tenant: TenantConfig | None,
        ledger: Ledger,
        burn: Burn,
        now_ms: int,
        out: BatchOutput,
    ) -> None:
        """Apply a joined round to the stores and emit its events; a redelivery re-emits them."""
        tenant_id = existing.tenant
        trace = trace_of(record.headers)  # the round's trace goes on to all it settles
        if existing.status == "rejected":
            raise PoisonMessage(
                "unknown_competition", f"round {joined.competition_id} was rejected"
            )
        if existing.status == "completed":
            if existing.final_offset == record.offset:  # redelivered: outputs may be lost
                out.records.extend(
                    Outbound(sink, key, value, list(trace)) for sink, key, value in existing.outputs
                )
            else:
                out.observations.append(Observation("duplicate_result", tenant_id, joined.family))
            return
        if not ledger.already_applied("joins", record.offset):
            period = billing_period(joined.joined_at_ms)
            ledger.charge(joined.cost_micros, period, existing.cost_center)
            ledger.mark("joins", record.offset)
            self.state.table("ledger").touch(tenant_id)
        objective = tenant.latency_objective_ms if tenant else 30_000
        window_days = tenant.slo_window_days if tenant else 30
        if not burn.already_applied("joins", record.offset):
            elapsed = joined.joined_at_ms - existing.created_ms
            good = joined.champion is not None and elapsed <= objective
            burn.record(joined.joined_at_ms, good, "joins", record.offset, window_days)
            self.state.table("burn").touch(tenant_id)
        rate = tenant_burn_rate(burn, tenant, now_ms)
        decision, evolution, changes = self._evolve(joined, rate, record, now_ms, out)
        outputs = [
            Outbound(o.sink, o.key, o.value, [*o.headers, *trace])
            for o in settled_outputs(existing, joined, decision, changes, rate, now_ms)
        ]
        self.state.table("dedup")[joined.competition_id] = replace(
            existing,
            status="completed",
            final_offset=record.offset,
            cost=joined.cost_micros,
            finished_ms=now_ms,
            outputs=tuple((o.sink, o.key or b"", o.value or b"") for o in outputs),
        )
        out.records.extend(outputs)
        scores = {n: v.score for n, v in joined.variants.items() if v.score is not None}
        out.observations.append(
            Observation(
                "competition",
                tenant_id,
                joined.family,
                joined.champion or "",
                data={
                    "costMicros": joined.cost_micros,
                    "scores": scores,
                    "winRates": evolution.win_rates(),
                    "promoted": decision.promote,
                },
            )
        )

    def _evolve(
        self, joined: CompetitionJoined, rate: float, record: Inbound, now_ms: int, out: BatchOutput
    ) -> tuple[PromotionDecision, Evolution, list[Change]]:
        """Count the round in the tenant's evolution, decide on a promotion and move the
        champion's rollout (domain/rollout.py), once."""
        key = evolution_key(joined.tenant, joined.family)
        evolutions = self.state.table("evolution")
        stored = evolutions.get(key) or {}
        evolution = Evolution.from_json(stored)
        rollout = Rollout.from_json(stored.get("rollout"), evolution)
        if evolution.already_applied(record.offset):  # its dedup record was lost in a crash
            last = stored.get("last") or {}
            if last.get("offset") == record.offset:
                changes = [Change.from_json(c) for c in last.get("changes", [])]
                return PromotionDecision(**last["decision"]), evolution, changes
            return evaluate(evolution, rate, self.policy), evolution, []
        evolution.record_round(
            joined.champion, joined.competitors, record.offset, self.policy.window_rounds
        )
        decision = decider.hold_if_pinned(rollout, evaluate(evolution, rate, self.policy))
        apply(evolution, decision)
        if decision.promote:
            evolution.promoted_ms = joined.joined_at_ms
        rollout, changes = round_changes(
            rollout, evolution, decision, joined.competition_id, rate, now_ms, self.rollout
        )
        out.observations.extend(observations(joined.tenant, joined.family, changes))
        last = {
            "offset": record.offset,
            "decision": decision.to_json(),
            "changes": [c.to_json() for c in changes],
        }
        evolutions[key] = {**evolution.to_json(), "last": last, "rollout": rollout.to_json()}
        return decision, evolution, changes
