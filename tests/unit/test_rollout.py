"""The champion rollout decider: steps, gates, rollbacks, pins and fencing by sequence."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lapverse_streams.domain import rollout
from lapverse_streams.domain.promotion import Evolution, PromotionDecision
from lapverse_streams.domain.rollout import Rollout, RolloutPolicy

NOW = 1_790_000_000_000
POLICY = RolloutPolicy(steps=(10, 50, 100), step_rounds=3, step_after_ms=60_000)
LEADING = {"experimental": 0.6, "balanced": 0.3}


def canary() -> Rollout:
    """experimental promoted over balanced (the incumbent): a 10 % canary, sequence 5."""
    before = Rollout(champion="balanced", sequence=4, promotion=2)
    change = rollout.promote(before, "experimental", "balanced", NOW, POLICY)
    return change.rollout


def test_a_promotion_starts_a_canary_and_numbers_the_next_event() -> None:
    before = Rollout(champion="balanced", sequence=4, promotion=2)
    change = rollout.promote(before, "experimental", "balanced", NOW, POLICY, {"evidence": {}})
    assert change.kind == "promoted"
    assert change.previous == "balanced"
    after = change.rollout
    assert (after.champion, after.baseline, after.previous) == (
        "experimental",
        "balanced",
        "balanced",
    )
    assert (after.state, after.percent, after.sequence, after.promotion) == ("canary", 10, 5, 5)


def test_rounds_step_the_rollout_up_while_the_gates_hold() -> None:
    state = canary()
    seen = []
    for _ in range(7):
        state, change = rollout.after_round(state, LEADING, 0.2, NOW + 1, POLICY)
        if change is not None:
            seen.append((change.kind, change.cause, state.percent, state.state, state.sequence))
    assert seen == [
        ("stepped", "step", 50, "ramping", 6),
        ("stepped", "step", 100, "full", 7),
    ]
    assert rollout.after_round(state, LEADING, 5.0, NOW, POLICY) == (state, None)  # full: done


def test_time_steps_the_rollout_up_on_a_tick_of_the_current_sequence() -> None:
    state = canary()
    assert rollout.on_tick(state, state.sequence, LEADING, 0.2, NOW + 59_999, POLICY) is None
    change = rollout.on_tick(state, state.sequence, LEADING, 0.2, NOW + 60_000, POLICY)
    assert change is not None
    assert (change.rollout.percent, change.rollout.state, change.reason) == (
        50,
        "ramping",
        "60 s at 10 %",
    )


@pytest.mark.parametrize("stale", [None, 4, 6])
def test_a_stale_tick_changes_nothing(stale: int | None) -> None:
    state = canary()
    assert rollout.on_tick(state, stale, LEADING, 9.0, NOW + 10**9, POLICY) is None


def test_burn_rate_at_one_rolls_back_to_the_previous_champion_with_its_reason() -> None:
    state = canary()
    later, change = rollout.after_round(state, LEADING, 1.0, NOW + 5, POLICY)
    assert change is not None
    assert (change.kind, change.cause, change.reason) == (
        "rolled-back",
        "burn-rate",
        "burn rate 1.00 ≥ 1",
    )
    assert (later.champion, later.previous, later.state, later.percent) == (
        "balanced",
        "experimental",
        "rolled-back",
        100,
    )
    assert later.sequence == state.sequence + 1
    tick = rollout.on_tick(state, state.sequence, LEADING, 2.5, NOW, POLICY)
    assert tick is not None
    assert tick.cause == "burn-rate"


def test_losing_the_win_rate_lead_rolls_back() -> None:
    change = rollout.on_tick(canary(), 5, {"experimental": 0.3, "balanced": 0.3}, 0.1, NOW, POLICY)
    assert change is not None
    assert (change.cause, change.rollout.champion) == ("lost-lead", "balanced")
    assert change.reason == "experimental win rate 0.300 ≤ balanced 0.300"


def test_a_first_champion_rolls_back_to_the_variant_it_beat() -> None:
    first = rollout.promote(Rollout(), "experimental", "balanced", NOW, POLICY).rollout
    change = rollout.rollback(first, NOW, "operator", "bad forecasts", "ops", "c1")
    assert change is not None
    assert (change.rollout.champion, change.actor, change.command_id) == ("balanced", "ops", "c1")
    assert rollout.rollback(change.rollout, NOW, "operator", "again", "ops", "c2") is None
    assert rollout.rollback(Rollout(), NOW, "operator", "none", "ops", "c3") is None


def test_a_merge_of_the_current_promotion_completes_the_rollout() -> None:
    state = canary()
    change = rollout.on_merge(state, 5, "experimental", LEADING, 0.2, NOW, POLICY, "score 0.9")
    assert change is not None
    assert (change.rollout.percent, change.rollout.state, change.actor, change.cause) == (
        100,
        "full",
        "kaggle",
        "merge",
    )


@pytest.mark.parametrize(
    ("sequence", "champion", "burn"),
    [
        (2, "experimental", 0.2),  # an older promotion's merge (a replay)
        (5, "balanced", 0.2),  # another champion
        (None, "experimental", 0.2),  # a stage queued before sequences were kept
        (5, "experimental", 1.5),  # the tenant burns its budget: no step up
    ],
)
def test_a_stale_or_gated_merge_changes_nothing(
    sequence: int | None, champion: str, burn: float
) -> None:
    assert rollout.on_merge(canary(), sequence, champion, LEADING, burn, NOW, POLICY, "") is None


def test_a_merge_after_the_rollout_moved_on_changes_nothing() -> None:
    rolled_back = rollout.rollback(canary(), NOW, "burn-rate", "burn")
    assert rolled_back is not None
    merge = rollout.on_merge(
        rolled_back.rollout, 5, "experimental", LEADING, 0.2, NOW, POLICY, "late"
    )
    assert merge is None


def test_a_pin_holds_promotion_until_unpinned() -> None:
    pinned = rollout.pin(canary(), "conservative", NOW, "ops", "incident 7", "c1")
    assert pinned is not None
    state = pinned.rollout
    assert (state.champion, state.previous, state.state, state.percent) == (
        "conservative",
        "experimental",
        "pinned",
        100,
    )
    assert rollout.pin(state, "conservative", NOW, "ops", "again", "c2") is None
    decision = PromotionDecision(True, "experimental", "conservative", "x beats y", {})
    held = rollout.hold_if_pinned(state, decision)
    assert not held.promote
    assert held.reason.startswith("pinned to conservative by an operator")
    assert rollout.after_round(state, LEADING, 9.0, NOW, POLICY) == (state, None)  # no gates
    unpinned = rollout.unpin(state, NOW, "ops", "over", "c3")
    assert unpinned is not None
    assert (unpinned.rollout.state, unpinned.rollout.champion) == ("full", "conservative")
    assert rollout.hold_if_pinned(unpinned.rollout, decision) == decision
    assert rollout.unpin(unpinned.rollout, NOW, "ops", "twice", "c4") is None


def test_a_change_of_champion_starts_a_new_tenure_in_the_evolution() -> None:
    evolution = Evolution(rounds=40, incumbent="experimental", since=10)
    change = rollout.rollback(canary(), NOW + 9, "operator", "why", "ops", "c1")
    assert change is not None
    rollout.take_over(evolution, change)
    assert (evolution.incumbent, evolution.since, evolution.promoted_ms) == (
        "balanced",
        40,
        NOW + 9,
    )


def test_rollouts_round_trip_and_legacy_champions_count_as_full() -> None:
    state = replace(canary(), rounds_at_step=2, applied=17)
    assert Rollout.from_json(state.to_json(), Evolution()) == state
    legacy = Rollout.from_json(None, Evolution(incumbent="balanced", promotions=3, promoted_ms=9))
    assert (legacy.champion, legacy.state, legacy.percent, legacy.sequence) == (
        "balanced",
        "full",
        100,
        3,
    )


def test_the_policy_knows_the_step_after_each_percentage() -> None:
    assert [POLICY.next_percent(p) for p in (10, 20, 50, 100)] == [50, 50, 100, 100]
