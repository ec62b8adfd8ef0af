"""Champion rollouts inside the governor: commands in, champion events and flags out.

The decider is `domain/rollout.py`; this module loads a family's Evolution and Rollout from
the evolution table, applies a round or a command to them, writes both back as one value and
turns each change into its event on lapverse-champions and the champion flag it implies on
lapverse-flags.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from lapverse_streams.domain import rollout as decider
from lapverse_streams.domain.batch import SOURCE, BatchOutput, Inbound, Observation, Outbound
from lapverse_streams.domain.budget import DAY_MS, Burn, burn_rate
from lapverse_streams.domain.promotion import Evolution, PromotionDecision
from lapverse_streams.domain.rollout import Change, Rollout, RolloutPolicy
from lapverse_streams.events.champion_models import (
    ChampionChanged,
    ChampionCommand,
    ChampionPromoted,
)
from lapverse_streams.events.codec import PoisonMessage, encode_event
from lapverse_streams.events.models import FinOpsTags, FlagConfig, Model, TenantConfig


def evolution_key(tenant: str, family: str) -> str:
    """The evolution table's key of a tenant's family."""
    return f"{tenant}/{family}"


def champion_flag_key(tenant: str, family: str) -> str:
    """The flag that rolls a tenant's family champion out."""
    return f"champion.{tenant}.{family}"


def champion_flag(champion: str, baseline: str, percent: int = 10) -> dict[str, Any]:
    """flagd string flag serving `percent` % of targeting keys the champion and the rest
    `baseline`; at 100 %, or without a baseline, the champion serves every key."""
    rest = baseline if baseline != champion else ""
    if percent >= 100 or not rest:
        return {"state": "ENABLED", "variants": {champion: champion}, "defaultVariant": champion}
    return {
        "state": "ENABLED",
        "variants": {champion: champion, rest: rest},
        "defaultVariant": rest,
        "targeting": {"fractional": [[champion, percent], [rest, 100 - percent]]},
    }


def tenant_burn_rate(burn: Burn, tenant: TenantConfig | None, now_ms: int) -> float:
    """The tenant's burn rate over its SLO window, as promotion and rollout gates read it."""
    window_days = tenant.slo_window_days if tenant else 30
    good, bad = burn.counts(now_ms, window_days * DAY_MS)
    return burn_rate(good, bad, tenant.slo_target if tenant else 0.99)


def change_outputs(
    tenant: str, family: str, change: Change, tags: FinOpsTags, now_ms: int
) -> list[Outbound]:
    """A change's champion event (keyed by tenant) and the champion flag it sets."""
    rollout = change.rollout
    assert rollout.champion is not None
    flag_key = champion_flag_key(tenant, family)
    common: dict[str, Any] = {
        "tenant": tenant,
        "family": family,
        "champion": rollout.champion,
        "previous": change.previous,
        "baseline": rollout.baseline,
        "sequence": rollout.sequence,
        "flag_key": flag_key,
        "rollout_percent": rollout.percent,
        "state": rollout.state,
        "tags": tags,
    }
    event: Model
    if change.kind == "promoted":
        event = ChampionPromoted(
            **common,
            competition_id=str(change.extra.get("competitionId", "")),
            evidence=dict(change.extra.get("evidence") or {}),
            promoted_at_ms=now_ms,
        )
        event_id = f"{tenant}/{family}:promotion:{rollout.sequence}"
    else:
        event = ChampionChanged(
            **common,
            promotion_sequence=rollout.promotion,
            reason=change.reason,
            cause=change.cause,
            actor=change.actor,
            command_id=change.command_id,
            changed_at_ms=now_ms,
        )
        event_id = f"{tenant}/{family}:{change.kind}:{rollout.sequence}"
    definition = champion_flag(rollout.champion, rollout.baseline, rollout.percent)
    flag = FlagConfig(flag_key=flag_key, definition=definition)
    short = f"champion.{change.kind}"
    return [
        Outbound(
            "champions",
            tenant.encode(),
            encode_event(short, event_id, tenant, event, now_ms, SOURCE),
            [],
        ),
        Outbound(
            "flags",
            flag_key.encode(),
            encode_event(
                "flag.configured", f"{flag_key}:{rollout.sequence}", flag_key, flag, now_ms, SOURCE
            ),
            [],
        ),
    ]


def round_changes(
    rollout: Rollout,
    evolution: Evolution,
    decision: PromotionDecision,
    competition_id: str,
    rate: float,
    now_ms: int,
    policy: RolloutPolicy,
) -> tuple[Rollout, list[Change]]:
    """What a settled round does to the rollout: a promotion starts one, else it may move."""
    if decision.promote and decision.challenger is not None:
        baseline = str(decision.evidence.get("baseline") or decision.incumbent or "")
        extra = {"competitionId": competition_id, "evidence": decision.evidence}
        change = decider.promote(rollout, decision.challenger, baseline, now_ms, policy, extra)
        return change.rollout, [change]
    kept, moved = decider.after_round(rollout, evolution.win_rates(), rate, now_ms, policy)
    if moved is None:
        return kept, []
    decider.take_over(evolution, moved)
    return kept, [moved]


def observations(tenant: str, family: str, changes: list[Change]) -> list[Observation]:
    """What the agent counts of each change (rollbacks by cause)."""
    return [
        Observation(f"champion_{change.kind}", tenant, family, change.cause) for change in changes
    ]


def apply_command(
    command: ChampionCommand,
    record: Inbound,
    evolutions: MutableMapping[str, Any],
    rate: float,
    tags: FinOpsTags,
    now_ms: int,
    policy: RolloutPolicy,
    out: BatchOutput,
) -> None:
    """Decide one champion command; a stale or pointless one changes nothing.

    A redelivered command (offset already applied) re-sends the outputs it made, which an
    at-least-once crash may have lost.
    """
    key = evolution_key(command.tenant, command.family)
    stored: Mapping[str, Any] = evolutions.get(key) or {}
    evolution = Evolution.from_json(dict(stored))
    rollout = Rollout.from_json(stored.get("rollout"), evolution)
    if record.offset <= rollout.applied:
        last = stored.get("lastCommand") or {}
        if last.get("offset") == record.offset:
            again = Change.from_json(last["change"])
            out.records.extend(change_outputs(command.tenant, command.family, again, tags, now_ms))
        return
    change = decide(command, rollout, evolution, rate, now_ms, policy)
    if change is None:
        return
    decider.take_over(evolution, change)
    kept = Rollout.from_json({**change.rollout.to_json(), "applied": record.offset}, evolution)
    evolutions[key] = {
        **stored,
        **evolution.to_json(),
        "rollout": kept.to_json(),
        "lastCommand": {"offset": record.offset, "change": change.to_json()},
    }
    out.records.extend(change_outputs(command.tenant, command.family, change, tags, now_ms))
    out.observations.extend(observations(command.tenant, command.family, [change]))


def decide(
    command: ChampionCommand,
    rollout: Rollout,
    evolution: Evolution,
    rate: float,
    now_ms: int,
    policy: RolloutPolicy,
) -> Change | None:
    """The change one command makes to the rollout, if any."""
    who, why, cid = command.actor, command.reason, command.command_id
    if command.action == "pin":
        if command.variant is None:
            raise PoisonMessage("wrong_schema", "a pin command names its variant")
        return decider.pin(rollout, command.variant, now_ms, who, why, cid)
    if command.action == "unpin":
        return decider.unpin(rollout, now_ms, who, why, cid)
    if command.action == "rollback":
        return decider.rollback(rollout, now_ms, "operator", why or "operator rollback", who, cid)
    win_rates = evolution.win_rates()
    if command.action == "tick":
        return decider.on_tick(rollout, command.sequence, win_rates, rate, now_ms, policy)
    return decider.on_merge(
        rollout, command.sequence, command.variant, win_rates, rate, now_ms, policy, why
    )


def tick(tenant: str, family: str, sequence: int, now_ms: int) -> ChampionCommand:
    """The rollout timer's command: look at the rollout of champion event `sequence` now."""
    return ChampionCommand(
        command_id=f"tick:{tenant}/{family}:{sequence}:{now_ms}",
        tenant=tenant,
        family=family,
        action="tick",
        sequence=sequence,
        actor=decider.GOVERNOR,
        reason="rollout timer",
        requested_at_ms=now_ms,
    )


def command_record(command: ChampionCommand, source: str) -> tuple[bytes, bytes]:
    """A command as the key and value of its record on lapverse-champion-commands."""
    event = encode_event(
        "champion.command",
        command.command_id,
        command.tenant,
        command,
        command.requested_at_ms,
        source,
    )
    return command.tenant.encode(), event


def active_rollouts(evolutions: Mapping[str, Any], owns: Any) -> list[tuple[str, str, Rollout]]:
    """(tenant, family, rollout) of every active rollout of the tenants `owns(tenant)` says."""
    found = []
    for key, raw in list(evolutions.items()):
        tenant, _, family = str(key).partition("/")
        rollout_raw = raw.get("rollout") if isinstance(raw, Mapping) else None
        if not rollout_raw or not owns(tenant):
            continue
        rollout = Rollout.from_json(rollout_raw, Evolution())
        if rollout.active:
            found.append((tenant, family, rollout))
    return found
