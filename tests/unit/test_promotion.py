"""Champion promotion: boundaries of each rule, whole streams and the record's JSON."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence

import pytest

from lapverse_streams.domain.promotion import (
    Evolution,
    PromotionDecision,
    PromotionPolicy,
    apply,
    bayes_factor,
    evaluate,
)

POLICY = PromotionPolicy()
VARIANTS = ("a", "b", "c", "d")


def evolution_with(wins: dict[str, int], incumbent: str | None = None) -> Evolution:
    """An evolution whose window holds these win counts, evenly interleaved over time."""
    spread = sorted(((k + 0.5) / n, v) for v, n in wins.items() for k in range(n))
    window = [v for _, v in spread]
    seen = dict.fromkeys(wins, len(window))
    return Evolution(window=window, seen=seen, rounds=len(window), incumbent=incumbent)


def fillers(rounds: int, variants: int, prefix: str = "f") -> dict[str, int]:
    """Spread `rounds` wins as evenly as possible over `variants` other variants."""
    share, extra = divmod(rounds, variants)
    return {f"{prefix}{i:02d}": share + (i < extra) for i in range(variants)}


def run_stream(
    weights_at: Callable[[int], Sequence[int]], rounds: int, seed: int
) -> tuple[Evolution, list[PromotionDecision]]:
    """Play seeded rounds, deciding and applying after each; returns the promotions made."""
    rng = random.Random(seed)
    evolution = Evolution()
    promoted = []
    for offset in range(rounds):
        winner = rng.choices(VARIANTS, weights_at(offset))[0]
        evolution.record_round(winner, VARIANTS, offset, POLICY.window_rounds)
        decision = evaluate(evolution, 0.5, POLICY)
        if decision.promote:
            promoted.append(decision)
        apply(evolution, decision)
    return evolution, promoted


def test_all_rules_satisfied_promotes() -> None:
    decision = evaluate(evolution_with({"a": 0, "b": 30}, incumbent="a"), 0.5, POLICY)
    assert decision.promote
    assert (decision.challenger, decision.incumbent, decision.reason) == ("b", "a", "b beats a")


def test_sample_one_short_does_not_promote() -> None:
    decision = evaluate(evolution_with({"a": 0, "b": 29}, incumbent="a"), 0.5, POLICY)
    assert not decision.promote
    assert decision.reason == "sample 29 < 30"


def test_burn_rate_exactly_one_does_not_promote() -> None:
    evolution = evolution_with({"a": 0, "b": 30}, incumbent="a")
    decision = evaluate(evolution, 1.0, POLICY)
    assert not decision.promote
    assert decision.reason == "burn rate 1 ≥ 1"
    assert evaluate(evolution, 0.999, POLICY).promote


def test_delta_exactly_five_points_does_not_promote() -> None:
    # 1000 rounds: b wins 50, incumbent a none, 20 others share the rest (< 50 each),
    # so delta is exactly 50/1000 and every other rule passes.
    policy = PromotionPolicy(window_rounds=1000)
    at_boundary = evolution_with({"a": 0, "b": 50, **fillers(950, 20)}, incumbent="a")
    decision = evaluate(at_boundary, 0.5, policy)
    assert not decision.promote
    assert decision.reason == "delta 0.05 ≤ 0.05"
    above = evolution_with({"a": 0, "b": 51, **fillers(949, 20)}, incumbent="a")
    assert evaluate(above, 0.5, policy).promote


def test_large_delta_without_significance_does_not_promote() -> None:
    evolution = evolution_with({"a": 45, "b": 60, "c": 48, "d": 47}, incumbent="a")
    decision = evaluate(evolution, 0.5, POLICY)
    assert decision.evidence["delta"]["passed"]
    assert not decision.promote
    assert decision.reason.startswith("test not significant")


def test_every_failing_rule_is_named() -> None:
    decision = evaluate(evolution_with({"a": 10, "b": 10}, incumbent="a"), 2.0, POLICY)
    assert decision.reason == (
        "sample 20 < 30; delta 0 ≤ 0.05; burn rate 2 ≥ 1; test not significant (BF 0.27 < 40)"
    )


def test_without_incumbent_the_leader_faces_the_runner_up() -> None:
    decision = evaluate(evolution_with({"a": 28, "b": 2, "c": 0}), 0.5, POLICY)
    assert decision.promote
    assert decision.incumbent is None
    assert decision.evidence["baseline"] == "b"
    assert decision.evidence["baselineKind"] == "runner-up"
    assert decision.evidence["test"]["pairs"] == 6


def test_no_rounds_no_rival_and_no_challenger_never_promote() -> None:
    assert evaluate(Evolution(), 0.0, POLICY).reason == "no rounds"
    assert evaluate(evolution_with({"a": 50}), 0.0, POLICY).reason == "no rival"
    assert evaluate(evolution_with({"a": 50}, incumbent="a"), 0.0, POLICY).reason == "no challenger"


def test_evidence_is_plain_json() -> None:
    decision = evaluate(evolution_with({"a": 3, "b": 30, "c": 1}, incumbent="a"), 0.25, POLICY)
    evidence = json.loads(json.dumps(decision.to_json(), allow_nan=False))["evidence"]
    assert evidence["sample"] == {
        "rounds": 34,
        "minRounds": 30,
        "challengerWins": 30,
        "baselineWins": 3,
        "passed": True,
    }
    assert evidence["slo"] == {"burnRate": 0.25, "maxBurnRate": 1.0, "passed": True}
    assert evidence["test"]["threshold"] == 80.0
    assert evidence["test"]["statistic"] > 80.0
    low, high = evidence["delta"]["interval"]
    assert evidence["delta"]["value"] == pytest.approx(27 / 34)
    assert low < 27 / 34 < high


def test_bayes_factor_is_one_without_data_and_grows_with_wins() -> None:
    assert bayes_factor(0, 0) == (1, 1)
    num, den = bayes_factor(10, 0)
    assert num / den == pytest.approx((2**11 - 1) / 11)
    assert bayes_factor(5, 5)[0] / bayes_factor(5, 5)[1] < 1


def test_dominating_variant_is_promoted_exactly_once() -> None:
    evolution, promoted = run_stream(lambda _: (7, 1, 1, 1), 2000, seed=1)
    assert [d.challenger for d in promoted] == ["a"]
    assert (evolution.incumbent, evolution.promotions) == ("a", 1)


@pytest.mark.parametrize("seed", range(10))
def test_equal_variants_are_never_promoted(seed: int) -> None:
    evolution, promoted = run_stream(lambda _: (1, 1, 1, 1), 2000, seed)
    assert promoted == []
    assert evolution.incumbent is None


def test_later_dominator_is_promoted_once_more() -> None:
    evolution, promoted = run_stream(
        lambda offset: (7, 1, 1, 1) if offset < 1000 else (1, 7, 1, 1), 2000, seed=2
    )
    assert [d.challenger for d in promoted] == ["a", "b"]
    assert (evolution.incumbent, evolution.promotions) == ("b", 2)


def test_apply_is_idempotent() -> None:
    evolution = evolution_with({"a": 0, "b": 30}, incumbent="a")
    decision = evaluate(evolution, 0.5, POLICY)
    apply(apply(evolution, decision), decision)
    assert (evolution.incumbent, evolution.promotions, evolution.since) == ("b", 1, 30)


def test_record_round_keeps_the_window_and_marks_offsets() -> None:
    evolution = Evolution()
    for offset, winner in enumerate(["a", "b", None, "b", "c"]):
        evolution.record_round(winner, ("a", "b") if offset < 2 else ("b", "c"), offset, 3)
    assert evolution.window == ["b", "b", "c"]
    assert evolution.rounds == 4
    assert evolution.already_applied(4)
    assert not evolution.already_applied(5)
    assert evolution.win_rates() == {"a": 0.0, "b": 2 / 3, "c": 1 / 3}
    evolution.record_round("c", ("b", "c"), 5, 3)
    assert "a" not in evolution.win_rates()


def test_evolution_json_round_trip() -> None:
    evolution, _ = run_stream(lambda _: (7, 1, 1, 1), 250, seed=3)
    raw = json.loads(json.dumps(evolution.to_json()))
    assert Evolution.from_json(raw) == evolution
    assert Evolution.from_json(None) == Evolution()
