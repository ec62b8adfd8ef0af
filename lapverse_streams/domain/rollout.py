"""The champion rollout of one tenant's family, and the one decider that moves it.

A promotion starts a canary (the first step, 10 %); each further step (e.g. 50 %, then
100 %) comes after `step_rounds` rounds or `step_after_ms` at the step, and only while the
tenant's burn rate stays below `max_burn_rate` and the champion keeps its win-rate lead
over the variant it beat. Otherwise the rollout rolls back to the previous champion. A
Kaggle merge of the current promotion takes it to 100 %; an operator pins, unpins or rolls
back. Every change numbers the next champion event (`sequence`): a command made for an
older sequence (a replayed merge, a late tick) is stale and changes nothing.

Pure: the governor loads a Rollout with its Evolution, calls these functions, and writes both
back as one value, so a champion change and the incumbent it implies are one atomic write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from lapverse_streams.domain.promotion import Evolution, PromotionDecision

ACTIVE = ("canary", "ramping")  # the states a rollout still steps up or rolls back from
GOVERNOR = "governor"  # the actor of automatic changes


@dataclass(frozen=True)
class RolloutPolicy:
    """How a champion's rollout steps up, and what rolls it back."""

    steps: tuple[int, ...] = (10, 50, 100)  # percent of targeting keys; the first is the canary
    step_rounds: int = 20  # rounds at a step before the next (0: rounds never step)
    step_after_ms: int = 3_600_000  # time at a step before the next (0: time never steps)
    max_burn_rate: float = 1.0

    def next_percent(self, percent: int) -> int:
        """The step after `percent` (100 stays 100)."""
        return next((step for step in self.steps if step > percent), 100)


@dataclass(frozen=True)
class Rollout:
    """Where a family's champion rollout stands; stored beside its Evolution.

    `champion` serves `percent` % of targeting keys and `baseline` the rest; `previous` is the
    champion before it (where a rollback goes); `promotion` is the sequence of the promotion
    this rollout belongs to; `applied` the last command offset applied (redelivery).
    """

    champion: str | None = None
    baseline: str = ""
    previous: str | None = None
    state: str = "full"
    percent: int = 100
    sequence: int = 0
    promotion: int = 0
    rounds_at_step: int = 0
    stepped_ms: int = 0
    since_ms: int = 0
    applied: int = -1

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the evolution table."""
        return {
            "champion": self.champion,
            "baseline": self.baseline,
            "previous": self.previous,
            "state": self.state,
            "percent": self.percent,
            "sequence": self.sequence,
            "promotion": self.promotion,
            "roundsAtStep": self.rounds_at_step,
            "steppedMs": self.stepped_ms,
            "sinceMs": self.since_ms,
            "applied": self.applied,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None, evolution: Evolution) -> Rollout:
        """Inverse of to_json; a champion promoted before rollouts were kept counts as full."""
        if not raw:
            return cls(
                champion=evolution.incumbent,
                sequence=evolution.promotions,
                promotion=evolution.promotions,
                since_ms=evolution.promoted_ms,
            )
        return cls(
            champion=raw["champion"],
            baseline=str(raw.get("baseline", "")),
            previous=raw.get("previous"),
            state=str(raw["state"]),
            percent=int(raw["percent"]),
            sequence=int(raw["sequence"]),
            promotion=int(raw["promotion"]),
            rounds_at_step=int(raw.get("roundsAtStep", 0)),
            stepped_ms=int(raw.get("steppedMs", 0)),
            since_ms=int(raw.get("sinceMs", 0)),
            applied=int(raw.get("applied", -1)),
        )

    @property
    def active(self) -> bool:
        """Still stepping up (or rolling back)."""
        return self.state in ACTIVE


@dataclass(frozen=True)
class Change:
    """One champion event to emit: the rollout after it, what happened, why and who."""

    kind: str  # promoted, stepped, rolled-back, pinned, unpinned
    rollout: Rollout
    reason: str
    cause: str  # short label: promotion, step, merge, burn-rate, lost-lead, operator, pin, unpin
    actor: str = GOVERNOR
    command_id: str | None = None
    previous: str | None = None  # the champion before this change
    extra: dict[str, Any] = field(default_factory=dict)  # the promotion's evidence, round id

    def to_json(self) -> dict[str, Any]:
        """Plain dict, kept so a redelivered round emits the same change again."""
        return {
            "kind": self.kind,
            "rollout": self.rollout.to_json(),
            "reason": self.reason,
            "cause": self.cause,
            "actor": self.actor,
            "commandId": self.command_id,
            "previous": self.previous,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Change:
        """Inverse of to_json."""
        return cls(
            kind=raw["kind"],
            rollout=Rollout.from_json(raw["rollout"], Evolution()),
            reason=raw["reason"],
            cause=raw["cause"],
            actor=raw["actor"],
            command_id=raw.get("commandId"),
            previous=raw.get("previous"),
            extra=dict(raw.get("extra") or {}),
        )


def _next(rollout: Rollout, now_ms: int, **changes: Any) -> Rollout:
    """The rollout after one more champion event (its sequence is the next one)."""
    return replace(
        rollout,
        sequence=rollout.sequence + 1,
        rounds_at_step=0,
        stepped_ms=now_ms,
        **changes,
    )


def promote(
    rollout: Rollout,
    challenger: str,
    baseline: str,
    now_ms: int,
    policy: RolloutPolicy,
    extra: dict[str, Any] | None = None,
) -> Change:
    """A promoted challenger starts its canary; the rest keep the variant it beat."""
    previous = rollout.champion
    canary = policy.steps[0] if policy.steps else 100
    after = _next(
        rollout,
        now_ms,
        champion=challenger,
        baseline=baseline if baseline != challenger else "",
        previous=previous,
        state=_state_at(canary, first=True),
        percent=canary,
        since_ms=now_ms,
    )
    after = replace(after, promotion=after.sequence)
    reason = f"{challenger} beats {baseline or previous or 'the field'}"
    return Change("promoted", after, reason, "promotion", previous=previous, extra=extra or {})


def _state_at(percent: int, first: bool = False) -> str:
    if percent >= 100:
        return "full"
    return "canary" if first else "ramping"


def held_by_gates(
    rollout: Rollout, win_rates: dict[str, float], burn_rate: float, policy: RolloutPolicy
) -> tuple[str, str] | None:
    """Why an active rollout must roll back: (cause, reason), or None while its gates hold."""
    if burn_rate >= policy.max_burn_rate:
        return "burn-rate", f"burn rate {burn_rate:.2f} ≥ {policy.max_burn_rate:g}"
    if rollout.baseline and rollout.champion is not None:
        mine = win_rates.get(rollout.champion, 0.0)
        theirs = win_rates.get(rollout.baseline, 0.0)
        if mine <= theirs:
            return (
                "lost-lead",
                f"{rollout.champion} win rate {mine:.3f} ≤ {rollout.baseline} {theirs:.3f}",
            )
    return None


def step(rollout: Rollout, now_ms: int, policy: RolloutPolicy, why: str, cause: str) -> Change:
    """The next step of an active rollout."""
    percent = policy.next_percent(rollout.percent)
    after = _next(rollout, now_ms, percent=percent, state=_state_at(percent))
    return Change("stepped", after, why, cause, previous=rollout.champion)


def rollback(
    rollout: Rollout,
    now_ms: int,
    cause: str,
    reason: str,
    actor: str = GOVERNOR,
    command_id: str | None = None,
) -> Change | None:
    """Back to the previous champion (or the variant the first one beat), for everyone.

    None when there is nothing to go back to: no champion, or already rolled back.
    """
    target = rollout.previous or rollout.baseline
    if rollout.champion is None or rollout.state == "rolled-back" or not target:
        return None
    after = _next(
        rollout,
        now_ms,
        champion=target,
        baseline="",
        previous=rollout.champion,
        state="rolled-back",
        percent=100,
        since_ms=now_ms,
    )
    return Change("rolled-back", after, reason, cause, actor, command_id, rollout.champion)


def after_round(
    rollout: Rollout,
    win_rates: dict[str, float],
    burn_rate: float,
    now_ms: int,
    policy: RolloutPolicy,
) -> tuple[Rollout, Change | None]:
    """A settled round of the family: roll back if a gate fails, step up after enough rounds.

    Returns the rollout to keep (its round count moves even when nothing is emitted).
    """
    if not rollout.active:
        return rollout, None
    failed = held_by_gates(rollout, win_rates, burn_rate, policy)
    if failed is not None:
        change = rollback(rollout, now_ms, *failed)
        return (change.rollout if change else rollout), change
    counted = replace(rollout, rounds_at_step=rollout.rounds_at_step + 1)
    if policy.step_rounds and counted.rounds_at_step >= policy.step_rounds:
        why = f"{counted.rounds_at_step} rounds at {rollout.percent} %"
        change = step(counted, now_ms, policy, why, "step")
        return change.rollout, change
    return counted, None


def on_tick(
    rollout: Rollout,
    sequence: int | None,
    win_rates: dict[str, float],
    burn_rate: float,
    now_ms: int,
    policy: RolloutPolicy,
) -> Change | None:
    """A timer's look at the rollout of `sequence`: gates first, then time at the step."""
    if sequence != rollout.sequence or not rollout.active:
        return None  # stale: the rollout has moved on since the tick was made
    failed = held_by_gates(rollout, win_rates, burn_rate, policy)
    if failed is not None:
        return rollback(rollout, now_ms, *failed)
    waited_ms = now_ms - rollout.stepped_ms
    if policy.step_after_ms and waited_ms >= policy.step_after_ms:
        return step(
            rollout, now_ms, policy, f"{waited_ms // 1000} s at {rollout.percent} %", "step"
        )
    return None


def on_merge(
    rollout: Rollout,
    sequence: int | None,
    champion: str | None,
    win_rates: dict[str, float],
    burn_rate: float,
    now_ms: int,
    policy: RolloutPolicy,
    reason: str,
) -> Change | None:
    """A Kaggle merge of promotion `sequence`: straight to 100 % while the gates hold.

    A merge of another promotion, or of another champion, is stale and changes nothing.
    """
    current = sequence == rollout.promotion and champion == rollout.champion
    if not current or not rollout.active:
        return None
    if held_by_gates(rollout, win_rates, burn_rate, policy) is not None:
        return None  # the next round or tick rolls it back
    after = _next(rollout, now_ms, percent=100, state="full")
    return Change(
        "stepped", after, reason or "Kaggle merge", "merge", "kaggle", previous=rollout.champion
    )


def pin(
    rollout: Rollout, variant: str, now_ms: int, actor: str, reason: str, command_id: str
) -> Change | None:
    """The operator makes `variant` champion for everyone; promotion stops until unpinned."""
    if rollout.state == "pinned" and rollout.champion == variant:
        return None
    taking_over = variant != rollout.champion
    after = _next(
        rollout,
        now_ms,
        champion=variant,
        baseline="",
        previous=rollout.champion if taking_over else rollout.previous,
        state="pinned",
        percent=100,
        since_ms=now_ms if taking_over else rollout.since_ms,
    )
    return Change("pinned", after, reason, "pin", actor, command_id, rollout.champion)


def unpin(rollout: Rollout, now_ms: int, actor: str, reason: str, command_id: str) -> Change | None:
    """Automatic promotion resumes; the pinned champion stays, fully rolled out."""
    if rollout.state != "pinned":
        return None
    after = _next(rollout, now_ms, state="full", percent=100)
    return Change("unpinned", after, reason, "unpin", actor, command_id, rollout.champion)


def take_over(evolution: Evolution, change: Change) -> None:
    """The evolution's incumbent follows a champion set by rollback or pin (a new tenure)."""
    champion = change.rollout.champion
    if champion is not None and champion != evolution.incumbent:
        evolution.incumbent = champion
        evolution.since = evolution.rounds
        evolution.promoted_ms = change.rollout.since_ms


def hold_if_pinned(rollout: Rollout, decision: PromotionDecision) -> PromotionDecision:
    """While an operator's pin stands, a promotion the evidence would make is held back."""
    if rollout.state != "pinned" or not decision.promote:
        return decision
    reason = f"pinned to {rollout.champion} by an operator; {decision.reason}"
    return replace(decision, promote=False, reason=reason)
