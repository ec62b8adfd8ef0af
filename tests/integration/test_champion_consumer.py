"""The example downstream service follows champions and serves variants as the platform does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from examples.champion_consumer import ChampionConsumer
from lapverse_streams.broker.engines import Broker
from lapverse_streams.broker.topics import ensure_topics
from lapverse_streams.domain import flags, rollout
from lapverse_streams.domain.arena import promotion_outputs
from lapverse_streams.domain.batch import Outbound
from lapverse_streams.domain.champions import champion_flag_key, change_outputs
from lapverse_streams.domain.promotion import PromotionDecision
from lapverse_streams.domain.rollout import Rollout, RolloutPolicy
from lapverse_streams.events import topics
from lapverse_streams.events.models import (
    CompetitionJoined,
    FinOpsTags,
    VariantSummary,
)
from lapverse_streams.settings import Settings
from tests.integration.helpers import produce_raw

pytestmark = pytest.mark.kafka

NOW_MS = 1_790_000_000_000
SINKS = {"champions": topics.CHAMPIONS, "flags": topics.FLAGS}
KEYS = [f"request-{n}" for n in range(1000)]


def tags(tenant: str) -> FinOpsTags:
    return FinOpsTags(
        environment="test", tenant_id=tenant, cost_center="ml", owner="qa", version="test"
    )


def promotion(
    tenant: str, family: str, champion: str, incumbent: str | None, sequence: int
) -> list[Outbound]:
    """What the governor emits when `champion` is promoted: champion.promoted and the flag."""
    beaten = incumbent or "balanced"
    joined = CompetitionJoined(
        competition_id=f"{tenant}-{family}-{sequence}",
        tenant=tenant,
        family=family,
        competitors=[champion, beaten],
        variants={
            champion: VariantSummary(status="ok", score=0.95, cost_micros=20_000),
            beaten: VariantSummary(status="ok", score=0.90, cost_micros=20_000),
        },
        champion=champion,
        missing=[],
        cost_micros=40_000,
        tags=tags(tenant),
        joined_at_ms=NOW_MS + sequence,
    )
    decision = PromotionDecision(
        promote=True,
        challenger=champion,
        incumbent=incumbent,
        reason="win-rate delta above threshold",
        evidence={"baseline": beaten, "test": "msprt", "winRateDelta": 0.3},
    )
    return promotion_outputs(joined, decision, sequence, NOW_MS + sequence)


def merge(tenant: str, family: str, champion: str, sequence: int = 1) -> list[Outbound]:
    """What the governor emits when Kaggle merges the champion of promotion `sequence`: the
    rollout's step to 100 % (champion.stepped) and the flag serving it to everyone."""
    canary = Rollout(champion, "balanced", None, "canary", 10, sequence, sequence)
    change = rollout.on_merge(
        canary, sequence, champion, {champion: 1.0}, 0.1, NOW_MS, RolloutPolicy(), "merged"
    )
    assert change is not None
    return change_outputs(tenant, family, change, tags(tenant), NOW_MS)


async def publish(settings: Settings, outputs: list[Outbound]) -> None:
    """Produce the champions and flags records, each to its topic, in order."""
    for output in outputs:
        if output.sink in SINKS:
            await produce_raw(settings, SINKS[output.sink], [(output.key, output.value)])


def flag_of(outputs: list[Outbound]) -> dict[str, object]:
    """The flag definition in a batch of outputs."""
    (flag,) = [orjson.loads(o.value or b"") for o in outputs if o.sink == "flags"]
    definition: dict[str, object] = flag["data"]["definition"]
    return definition


def platform_variant(tenant: str, family: str, definition: dict[str, object], key: str) -> object:
    """The champion flag's value for a request key, by the platform's evaluator."""
    flag_key = champion_flag_key(tenant, family)
    return flags.evaluate(flag_key, definition, tenant, targeting_key=key).value


@pytest.fixture
async def settings(broker: Broker) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = Settings(broker_url=broker.url, topic_prefix=prefix, topic_partitions=2)
    await ensure_topics(settings)
    return settings


@pytest.fixture
async def consumer(settings: Settings) -> AsyncIterator[ChampionConsumer]:
    async with ChampionConsumer(settings.bootstrap_servers, settings.topic_prefix) as running:
        yield running


async def test_keeps_the_latest_champion_per_tenant_and_family(
    settings: Settings, consumer: ChampionConsumer
) -> None:
    await publish(settings, promotion("acme", "forecast", "conservative", None, 1))
    await publish(settings, promotion("globex", "forecast", "aggressive", None, 1))
    latest = promotion("acme", "forecast", "experimental", "conservative", 2)
    await publish(settings, latest)

    def caught_up() -> bool:
        acme = consumer.champion("acme", "forecast")
        flag_applied = all(
            consumer.variant_for("acme", "forecast", key)
            == platform_variant("acme", "forecast", flag_of(latest), key)
            for key in KEYS[:50]
        )
        return bool(acme and acme.sequence == 2 and flag_applied)

    await consumer.wait_until(lambda: caught_up() and bool(consumer.champion("globex", "forecast")))
    acme = consumer.champion("acme", "forecast")
    assert acme is not None
    assert (acme.champion, acme.previous, acme.baseline) == (
        "experimental",
        "conservative",
        "conservative",
    )
    assert (acme.flag_key, acme.rollout_percent) == ("champion.acme.forecast", 10)
    globex = consumer.champion("globex", "forecast")
    assert globex is not None
    assert (globex.champion, globex.previous, globex.sequence) == ("aggressive", None, 1)
    assert consumer.champion("acme", "other") is None
    assert consumer.champion("initech", "forecast") is None
    assert consumer.variant_for("initech", "forecast", "request-1") is None


async def test_variant_for_agrees_with_the_platform_for_every_key(
    settings: Settings, consumer: ChampionConsumer
) -> None:
    promoted = promotion("acme", "forecast", "conservative", "balanced", 1)
    other = promotion("globex", "forecast", "aggressive", "theta", 1)
    await publish(settings, [*promoted, *other])

    def agrees(tenant: str, outputs: list[Outbound]) -> bool:
        definition = flag_of(outputs)
        return all(
            consumer.variant_for(tenant, "forecast", key)
            == platform_variant(tenant, "forecast", definition, key)
            for key in KEYS
        )

    await consumer.wait_until(lambda: agrees("acme", promoted) and agrees("globex", other))
    served = [consumer.variant_for("acme", "forecast", key) for key in KEYS]
    assert set(served) == {"conservative", "balanced"}
    assert 0.07 <= served.count("conservative") / len(KEYS) <= 0.13  # the 10 % rollout
    assert [consumer.variant_for("acme", "forecast", key) for key in KEYS] == served  # sticky
    assert {consumer.variant_for("globex", "forecast", key) for key in KEYS} == {
        "aggressive",
        "theta",
    }

    await publish(settings, merge("acme", "forecast", "conservative"))
    await consumer.wait_until(
        lambda: all(consumer.variant_for("acme", "forecast", k) == "conservative" for k in KEYS)
    )
    assert "theta" in {consumer.variant_for("globex", "forecast", key) for key in KEYS}


async def test_the_sticky_ten_percent_split_matches_the_platform_for_ten_thousand_keys(
    settings: Settings, consumer: ChampionConsumer
) -> None:
    promoted = promotion("acme", "forecast", "experimental", "conservative", 1)
    await publish(settings, promoted)
    definition = flag_of(promoted)
    keys = [f"customer-{n}" for n in range(10_000)]
    platform = [platform_variant("acme", "forecast", definition, key) for key in keys]
    await consumer.wait_until(lambda: consumer.variant_for("acme", "forecast", keys[0]) is not None)
    await consumer.wait_until(
        lambda: (
            consumer.champion("acme", "forecast") is not None
            and consumer.variant_for("acme", "forecast", keys[1]) == platform[1]
        )
    )
    served = [consumer.variant_for("acme", "forecast", key) for key in keys]
    assert served == platform  # every one of the 10,000 keys: the same variant as the platform
    assert 0.09 <= served.count("experimental") / len(keys) <= 0.11  # the 10 % canary
    assert [consumer.variant_for("acme", "forecast", key) for key in keys] == served  # sticky
