"""Self-compete rounds: champion choice, the results join and its readiness."""

from __future__ import annotations

import json

import pytest

from lapverse_streams.domain.tournament import Round, RoundOutcome, VariantResult, pick_champion


def ok(variant: str, score: float, cost_micros: int = 100) -> VariantResult:
    """A successful run."""
    return VariantResult(variant, "ok", score, cost_micros, duration_ms=5, output={"s": score})


def make_round(*variants: str, deadline_ms: int = 1_000) -> Round:
    """An open round expecting these variants."""
    return Round("c1", "acme", "news", variants, deadline_ms)


def test_highest_score_wins() -> None:
    assert pick_champion([ok("a", 0.5), ok("b", 0.9), ok("c", 0.7)]) == "b"


def test_score_tie_goes_to_lower_cost() -> None:
    assert pick_champion([ok("a", 0.9, cost_micros=300), ok("b", 0.9, cost_micros=200)]) == "b"


def test_score_and_cost_tie_goes_to_first_name() -> None:
    assert pick_champion([ok("zeta", 0.9), ok("alpha", 0.9), ok("mid", 0.9)]) == "alpha"


def test_failed_timed_out_and_unscored_runs_cannot_win() -> None:
    results = [
        VariantResult("a", "failed", 1.0, 100, 5, None, "boom"),
        VariantResult("b", "timeout", 0.99, 100, 5, None, "deadline"),
        VariantResult("c", "ok", None, 100, 5, {}, None),
        VariantResult("d", "ok", float("nan"), 100, 5, {}, None),
        ok("e", 0.1),
    ]
    assert pick_champion(results) == "e"
    assert pick_champion(results[:4]) is None
    assert pick_champion([]) is None


def test_duplicate_result_is_recorded_once() -> None:
    rnd = make_round("a", "b")
    assert rnd.record(ok("a", 0.5))
    assert not rnd.record(ok("a", 0.9))
    assert rnd.results["a"].score == 0.5


def test_unexpected_variant_and_closed_round_are_ignored() -> None:
    rnd = make_round("a", "b")
    assert not rnd.record(ok("x", 1.0))
    rnd.complete()
    assert not rnd.record(ok("b", 1.0))
    assert rnd.outcome().champion is None


def test_ready_when_all_reported() -> None:
    rnd = make_round("a", "b")
    rnd.record(ok("a", 0.5))
    assert not rnd.is_ready(now_ms=0)
    rnd.record(VariantResult("b", "failed", None, 40, 5, None, "boom"))
    assert rnd.is_ready(now_ms=0)


def test_ready_at_the_deadline() -> None:
    rnd = make_round("a", "b", deadline_ms=1_000)
    assert not rnd.is_ready(now_ms=999)
    assert rnd.is_ready(now_ms=1_000)


def test_outcome_names_missing_and_charges_runs_that_reported() -> None:
    rnd = make_round("a", "b", "c", "d")
    rnd.record(ok("a", 0.4, cost_micros=100))
    rnd.record(ok("b", 0.8, cost_micros=200))
    rnd.record(VariantResult("c", "failed", None, 50, 5, None, "boom"))
    outcome = rnd.complete()
    assert rnd.completed
    assert outcome.champion == "b"
    assert outcome.scores == {"a": 0.4, "b": 0.8}
    assert outcome.missing == ("c", "d")
    assert outcome.cost_micros == 350
    assert outcome.competitors == ("a", "b", "c", "d")


def test_round_without_scores_has_no_champion() -> None:
    rnd = make_round("a", "b")
    rnd.record(VariantResult("a", "timeout", None, 0, 5, None, "late"))
    outcome = rnd.complete()
    assert outcome.champion is None
    assert outcome.missing == ("a", "b")


def test_round_json_round_trip() -> None:
    rnd = make_round("a", "b")
    rnd.record(ok("a", 0.5))
    rnd.record(VariantResult("b", "failed", None, 10, 3, None, "boom"))
    raw = json.loads(json.dumps(rnd.to_json()))
    assert Round.from_json(raw) == rnd
    outcome = rnd.complete()
    assert RoundOutcome.from_json(json.loads(json.dumps(outcome.to_json()))) == outcome


def test_unknown_status_is_rejected() -> None:
    raw = ok("a", 0.5).to_json() | {"status": "weird"}
    with pytest.raises(ValueError, match="unknown variant status"):
        VariantResult.from_json(raw)
