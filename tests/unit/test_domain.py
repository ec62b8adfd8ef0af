"""Pricing, ledger, budget, idempotency and retry rules."""

from __future__ import annotations

import random

import pytest

from lapverse_streams.domain import budget, idempotency, pricing
from lapverse_streams.domain.ledger import KEEP_PERIODS, Ledger
from lapverse_streams.domain.retry import backoff_ms
from lapverse_streams.events.models import Complexity, TaskRequest


@pytest.mark.parametrize(
    ("complexity", "micros"),
    [
        (Complexity.SIMPLE, 10_000),
        (Complexity.INTERMEDIATE, 20_000),
        (Complexity.ADVANCED, 40_000),
        (Complexity.EXPERT, 80_000),
    ],
)
def test_task_price_is_base_times_multiplier(complexity: Complexity, micros: int) -> None:
    assert pricing.task_estimate_micros(complexity) == micros


def test_default_competition_costs_eight_cents() -> None:
    assert pricing.usd(pricing.competition_estimate_micros(4, Complexity.INTERMEDIATE)) == 0.08


def test_usd_round_trip() -> None:
    assert pricing.usd_to_micros(1000.0) == 1_000_000_000
    assert pricing.usd(1) == 0.000001


def test_billing_period_is_utc_month() -> None:
    assert pricing.billing_period(0) == "1970-01"
    last_of_2023 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
    assert pricing.billing_period(last_of_2023 - 1) == "2023-12"
    assert pricing.billing_period(last_of_2023) == "2024-01"
    assert pricing.billing_period(1_709_251_199_999) == "2024-02"  # leap day, last ms
    assert pricing.billing_period(1_709_251_200_000) == "2024-03"


def test_ledger_charges_and_forecasts_with_the_reservations_it_is_bound_to() -> None:
    ledger = Ledger()
    ledger.reservations.hold("t2", 50)  # in the governor: the accepted dedup record of t2
    ledger.charge(80, "2026-11", "ops").charge(5, "2026-11", "ml")
    assert ledger.spend == {"2026-11": {"ops": 80, "ml": 5}}
    assert ledger.reserved == {"t2": 50}
    assert ledger.forecast("2026-11", 10) == 80 + 5 + 50 + 10
    assert Ledger.from_bytes(ledger.to_bytes()) == ledger


def test_ledger_keeps_recent_periods_only() -> None:
    ledger = Ledger()
    for month in range(1, 7):
        ledger = ledger.charge(1, f"2026-{month:02d}", "ops")
    assert sorted(ledger.spend) == [f"2026-{m:02d}" for m in range(7 - KEEP_PERIODS, 7)]


def test_ledger_offsets_mark_applied() -> None:
    ledger = Ledger().mark("results", 5)
    assert ledger.already_applied("results", 5)
    assert not ledger.already_applied("results", 6)
    assert not ledger.already_applied("tasks", 0)


def test_burn_counts_within_window_and_prunes() -> None:
    hour = budget.HOUR_MS
    burn = (
        budget.Burn()
        .record(0, True, "results", 0, 1)
        .record(hour, False, "results", 1, 1)
        .record(30 * hour, True, "results", 2, 1)
    )
    assert burn.counts(30 * hour, budget.DAY_MS) == (1, 0)
    assert budget.Burn.from_bytes(burn.to_bytes()) == burn


def test_budget_math() -> None:
    assert budget.burn_rate(99, 1, 0.99) == pytest.approx(1.0)
    assert budget.budget_remaining(99, 1, 0.99) == pytest.approx(0.0)
    assert budget.budget_remaining(0, 0, 0.99) == 1.0
    assert budget.burn_rate(0, 0, 0.99) == 0.0


def test_budget_needs_a_minimum_sample() -> None:
    burn = budget.Burn().record(0, False, "results", 0, 30)
    assert not budget.budget_exhausted(burn, 0.99, 30, 1, min_events=2)
    assert budget.budget_exhausted(burn, 0.99, 30, 1, min_events=1)


def test_task_id_is_deterministic_and_tenant_scoped() -> None:
    assert idempotency.task_id("a", "k") == idempotency.task_id("a", "k")
    assert idempotency.task_id("a", "k") != idempotency.task_id("b", "k")


def test_fingerprint_ignores_defaults_being_explicit() -> None:
    short = TaskRequest(type="A", tenant="t")
    explicit = TaskRequest.model_validate(
        {"type": "A", "tenant": "t", "priority": "normal", "requirements": {"complexity": "simple"}}
    )
    assert idempotency.fingerprint(short) == idempotency.fingerprint(explicit)
    assert idempotency.fingerprint(short) != idempotency.fingerprint(
        TaskRequest(type="B", tenant="t")
    )


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("k", True),
        ("x" * 255, True),
        ("x" * 256, False),
        ("", False),
        (None, False),
        ("a\nb", False),
    ],
)
def test_key_rules(key: str | None, ok: bool) -> None:
    assert (idempotency.key_problem(key) is None) is ok


def test_backoff_doubles_with_bounded_jitter() -> None:
    rng = random.Random(1)
    for attempt, base in [(1, 1000), (2, 2000), (3, 4000)]:
        delay = backoff_ms(attempt, 1000, rng=rng)
        assert base * 0.5 <= delay <= base * 1.5


def test_burn_counts_results_and_rounds_by_their_own_offsets() -> None:
    burn = budget.Burn().record(0, True, "joins", 500, 30)  # a round far along its topic
    assert not burn.already_applied("results", 3)  # a task result at a low offset still counts
    burn.record(0, False, "results", 3, 30)
    assert burn.counts(1, budget.DAY_MS) == (1, 1)
    assert burn.already_applied("results", 3)
    assert burn.already_applied("joins", 500)


def test_a_burn_stored_with_one_offset_reads_it_for_both_topics() -> None:
    old = b'{"buckets": {"0": [2, 1]}, "applied": 7}'
    burn = budget.Burn.from_bytes(old)
    assert burn.applied == {"results": 7, "joins": 7}
    assert budget.Burn.from_bytes(burn.to_bytes()) == burn
