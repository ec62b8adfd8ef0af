"""The governor's rounds: admission, fan-out, settling once, and promotion over a stream."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from lapverse_streams.domain.admission import Policy
from lapverse_streams.domain.batch import Inbound, Outbound
from lapverse_streams.domain.governor import Governor
from lapverse_streams.domain.pricing import billing_period
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import (
    CompetitionJoined,
    CompetitionRequested,
    FinOpsTags,
    TenantConfig,
    VariantSummary,
)
from lapverse_streams.variants.forecast import ForecastFamily

NOW = 1_790_000_000_000
TAGS = FinOpsTags(environment="test", tenant_id="acme", cost_center="ops", owner="o", version="1")
VARIANTS = ("aggressive", "conservative", "balanced", "experimental")
SERIES = {"series": [float(i % 12) for i in range(48)], "horizon": 12}


@pytest.fixture
def gov() -> Governor:
    return Governor(
        records={},
        ledgers={},
        burns={},
        tenants={"acme": TenantConfig(tenant_id="acme", mrr_micros=10**12, tags=TAGS)},
        flag_definitions={},
        policy=Policy(0.7, 3),
        environment="test",
        version="1",
        retention_ms=86_400_000,
        clock_ms=lambda: NOW,
        families={"forecast": ForecastFamily()},
    )


class Log:
    """Offsets per source, like one partition of each topic."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}

    def raw(self, source: str, value: bytes) -> Inbound:
        offset = self.offsets.get(source, 0)
        self.offsets[source] = offset + 1
        return Inbound(source, 0, offset, b"acme", value, [("lapverse-request-id", b"r")])

    def request(self, key: str, **body: Any) -> Inbound:
        data = CompetitionRequested(tenant="acme", input=SERIES, **body)
        return self.raw(
            "rounds", encode(envelope("competition.requested", key, "acme", data, NOW, "/t"))
        )

    def joined(
        self, competition_id: str, champion: str | None, competitors: tuple[str, ...] = VARIANTS
    ) -> Inbound:
        variants = {
            v: VariantSummary(status="ok", score=0.9 if v == champion else 0.8, cost_micros=20_000)
            for v in competitors
        }
        data = CompetitionJoined(
            competition_id=competition_id,
            tenant="acme",
            family="forecast",
            competitors=list(competitors),
            variants=variants,
            champion=champion,
            missing=[],
            cost_micros=20_000 * len(competitors),
            tags=TAGS,
            joined_at_ms=NOW,
        )
        event = envelope("competition.joined", f"{competition_id}:joined", "acme", data, NOW, "/t")
        return self.raw("joins", encode(event))


def sinks(records: list[Outbound], sink: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value or b"null") for r in records if r.sink == sink]


def admit_round(gov: Governor, log: Log, key: str) -> str:
    out = gov.process([log.request(key)])
    (decision,) = sinks(out.records, "decisions")
    assert decision["type"] == "io.lapverse.competition.accepted.v1"
    return str(decision["data"]["competitionId"])


def test_accepted_round_reserves_and_fans_out_one_run_per_competitor(gov: Governor) -> None:
    out = gov.process([Log().request("r1")])
    (decision,) = sinks(out.records, "decisions")
    assert decision["data"]["costEstimateMicros"] == 80_000
    assert decision["data"]["competitors"] == list(VARIANTS)
    runs = sinks(out.records, "runs")
    assert [r["data"]["variant"] for r in runs] == list(VARIANTS)
    assert {r["data"]["deadlineMs"] for r in runs} == {NOW + 30_000}
    assert gov.reservations.of("acme").items == {decision["data"]["competitionId"]: 80_000}


def test_rounds_that_cannot_run_are_rejected_without_reserving(gov: Governor) -> None:
    log = Log()
    cases = [
        (log.request("a", competitors=["aggressive", "psychic"]), 400, "psychic"),
        (log.request("b", family="poetry"), 404, "poetry"),
    ]
    for inbound, status, word in cases:
        (decision,) = sinks(gov.process([inbound]).records, "decisions")
        assert decision["data"]["httpStatus"] == status
        assert word in decision["data"]["detail"]
    short = CompetitionRequested(tenant="acme", input={"series": [1, 2, 3], "horizon": 2})
    value = encode(envelope("competition.requested", "c", "acme", short, NOW, "/t"))
    (decision,) = sinks(gov.process([log.raw("rounds", value)]).records, "decisions")
    assert decision["data"]["httpStatus"] == 400
    assert gov.reservations.total("acme") == 0


def test_joined_round_is_charged_once_and_its_redelivery_re_emits(gov: Governor) -> None:
    log = Log()
    round_id = admit_round(gov, log, "r1")
    joined = log.joined(round_id, "balanced")
    out = gov.process([joined])
    (completed,) = sinks(out.records, "completions")
    assert completed["data"]["champion"] == "balanced"
    assert completed["data"]["costMicros"] == 80_000
    assert completed["data"]["promotion"]["decision"] == "kept"
    ledger = gov.ledgers["acme"].to_bytes()
    assert gov.ledgers["acme"].spend[billing_period(NOW)] == {"default": 80_000}
    assert gov.reservations.total("acme") == 0

    again = gov.process([joined])  # same offset: a redelivery after a crash
    assert [r.value for r in again.records] == [r.value for r in out.records]
    duplicate = gov.process([log.joined(round_id, "balanced")])  # a later copy
    assert duplicate.records == []
    assert gov.ledgers["acme"].to_bytes() == ledger


def test_a_dominating_variant_is_promoted_exactly_once(gov: Governor) -> None:
    log = Log()
    rng = random.Random(7)
    promotions: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []
    kaggle: list[dict[str, Any]] = []
    for i in range(300):
        round_id = admit_round(gov, log, f"r{i}")
        winner = "experimental" if rng.random() < 0.7 else rng.choice(VARIANTS[:3])
        out = gov.process([log.joined(round_id, winner)])
        promotions += sinks(out.records, "champions")
        flags += sinks(out.records, "flags")
        kaggle += sinks(out.records, "kaggle")
    # the promotion, then the rollout's steps after 20 rounds each (the gates held)
    assert [
        (e["type"], e["data"]["rolloutPercent"], e["data"]["sequence"]) for e in promotions
    ] == [
        ("io.lapverse.champion.promoted.v1", 10, 1),
        ("io.lapverse.champion.stepped.v1", 50, 2),
        ("io.lapverse.champion.stepped.v1", 100, 3),
    ]
    promoted = promotions[0]
    assert promoted["data"]["state"] == "canary"
    assert [e["data"]["state"] for e in promotions[1:]] == ["ramping", "full"]
    assert promoted["data"]["champion"] == "experimental"
    assert promoted["data"].get("previous") is None  # no incumbent before
    evidence = promoted["data"]["evidence"]
    assert evidence["test"]["passed"]
    assert evidence["slo"]["passed"]
    assert evidence["delta"]["value"] > 0.05
    canary, ramping, full = flags
    assert canary["data"]["flagKey"] == "champion.acme.forecast"
    assert canary["data"]["definition"]["targeting"]["fractional"][0] == ["experimental", 10]
    assert ramping["data"]["definition"]["targeting"]["fractional"][0] == ["experimental", 50]
    assert full["data"]["definition"]["defaultVariant"] == "experimental"
    assert "targeting" not in full["data"]["definition"]
    (queued,) = kaggle
    assert queued["type"] == "io.lapverse.kaggle.sync.v1"
    assert queued["data"]["champion"] == "experimental"


def test_equal_variants_are_never_promoted(gov: Governor) -> None:
    log = Log()
    rng = random.Random(11)
    for i in range(300):
        round_id = admit_round(gov, log, f"r{i}")
        out = gov.process([log.joined(round_id, rng.choice(VARIANTS))])
        assert sinks(out.records, "champions") == []
