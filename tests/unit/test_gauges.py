"""The owned-state gauges: values from the tables, only for the worker's own tenants."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client.parser import text_string_to_metric_families

from agents.gauges import Figures, burn_windows, figures, partition_of, publish
from lapverse_streams.domain.budget import HOUR_MS, Burn
from lapverse_streams.domain.ledger import Ledger
from lapverse_streams.domain.pricing import billing_period
from lapverse_streams.domain.promotion import Evolution
from lapverse_streams.domain.rollout import Rollout
from lapverse_streams.domain.state import Reservations
from lapverse_streams.events.models import TenantConfig
from lapverse_streams.observability.metrics import Metrics
from tests.unit.test_governor import TAGS

NOW = 1_790_000_000_000


def tenant(tenant_id: str, mrr_usd: float = 1000.0) -> TenantConfig:
    return TenantConfig(
        tenant_id=tenant_id,
        mrr_micros=int(mrr_usd * 1_000_000),
        slo_target=0.9,
        tags=TAGS.model_copy(update={"tenant_id": tenant_id}),
    )


@pytest.mark.parametrize("key", ["acme", "globex", "t-1", "ünïcode", ""])
def test_partition_of_agrees_with_the_producers_partitioner(key: str) -> None:
    partitions = list(range(8))
    assert partition_of(key, 8) == DefaultPartitioner()(key.encode(), partitions, partitions)


def tables() -> dict[str, Any]:
    reservations = Reservations()
    reservations.of("acme").hold("t1", 40_000)
    reservations.of("acme").hold("t2", 60_000)
    reservations.of("globex").hold("t3", 70_000)  # not this worker's tenant
    ledger = Ledger()
    ledger.spend[billing_period(NOW)] = {"ops": 2_500_000, "ads": 500_000}
    ledger.spend["1999-01"] = {"ops": 9_000_000}  # another period: not this month's spend
    burn = Burn()
    for i in range(90):
        burn = burn.record(NOW - 2 * HOUR_MS, True, "results", i, 30)
    for i in range(10):
        burn = burn.record(NOW - 10 * 60_000, False, "results", 90 + i, 30)
    evolution = Evolution(incumbent="balanced", promotions=1, promoted_ms=NOW - 60_000)
    canary = Rollout("balanced", "aggressive", None, "canary", 10, 1, 1, since_ms=NOW - 60_000)
    return {
        "ledger": {"acme": ledger, "globex": Ledger()},
        "reservations": reservations,
        "burn": {"acme": burn},
        "evolution": {
            "acme/forecast": {**evolution.to_json(), "rollout": canary.to_json()},
            "acme/legacy": evolution.to_json(),  # promoted before rollouts were kept: full
            "globex/forecast": Evolution().to_json(),
        },
    }


def acme_only(tenant_id: str) -> bool:
    return tenant_id == "acme"


def test_figures_come_from_the_tables_of_owned_tenants_only() -> None:
    t = tables()
    configs = {"acme": tenant("acme", 2000.0), "globex": tenant("globex")}
    stores = (t["ledger"], t["reservations"], t["burn"], t["evolution"])
    values = figures(*stores, configs, acme_only, NOW, 30)
    assert values.spend == {("acme", "ops"): 2.5, ("acme", "ads"): 0.5}
    assert values.reserved == {("acme",): 0.1}
    assert values.mrr == {("acme",): 2000.0}
    # 10 bad of 100 at a 0.9 target: the whole budget burned over 30 days, at rate 1
    assert values.remaining == {("acme",): pytest.approx(0.0)}
    assert values.burn[("acme", "30d")] == pytest.approx(1.0)
    assert values.burn[("acme", "1h")] == pytest.approx(10.0)  # only the bad ones this hour
    assert {label for _, label in values.burn} == set(burn_windows(30))
    assert values.champion == {
        ("acme", "forecast", "balanced"): 1.0,
        ("acme", "legacy", "balanced"): 1.0,
    }
    assert values.promoted == {
        ("acme", "forecast"): (NOW - 60_000) / 1000,
        ("acme", "legacy"): (NOW - 60_000) / 1000,
    }
    assert values.rollout == {("acme", "forecast"): 0.1, ("acme", "legacy"): 1.0}
    assert values.state == {("acme", "forecast", "canary"): 1.0, ("acme", "legacy", "full"): 1.0}


def test_publish_replaces_every_series_so_moved_tenants_disappear() -> None:
    metrics = Metrics()
    publish(metrics, Figures(spend={("acme", "ops"): 1.0}, mrr={("acme",): 5.0}))
    publish(metrics, Figures(mrr={("globex",): 7.0}))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.name in ("lapverse_spend_usd", "lapverse_mrr_usd")
    }
    assert samples == {("lapverse_mrr_usd", (("tenant", "globex"),)): 7.0}


def test_every_process_exports_process_and_gc_metrics() -> None:
    names = {f.name for f in text_string_to_metric_families(Metrics().exposition().decode())}
    assert {
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "python_gc_objects_collected",
    } <= names
