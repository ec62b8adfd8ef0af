"""Gauges of the state a worker owns: spend, reservations, MRR, error budget, champions.

Champion gauges come from the rollout kept beside each family's evolution (domain/rollout.py):
the champion, since when it serves, its rollout ratio and state.

Each worker sets them from its own tables, for the tenants of the partitions it is assigned
(a standby replica's copy is not its to report), on a timer. Each refresh replaces the whole
set, so a tenant whose partition moved to another worker disappears from this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka.partitioner import murmur2

from lapverse_streams.clock import now_ms
from lapverse_streams.domain.budget import DAY_MS, HOUR_MS, Burn, budget_remaining, burn_rate
from lapverse_streams.domain.ledger import Ledger
from lapverse_streams.domain.pricing import MICROS_PER_USD, billing_period
from lapverse_streams.domain.promotion import Evolution
from lapverse_streams.domain.rollout import Rollout
from lapverse_streams.domain.state import Reservations
from lapverse_streams.events import topics
from lapverse_streams.events.models import TenantConfig
from lapverse_streams.observability.metrics import Metrics

if TYPE_CHECKING:
    from agents.app import Worker

REFRESH_S = 5.0


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (murmur2, as the producers)."""
    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def burn_windows(slo_window_days: int) -> dict[str, int]:
    """Burn-rate windows by label: the alerting windows the hourly buckets can answer, and
    the SLO window itself."""
    return {
        "1h": HOUR_MS,
        "6h": 6 * HOUR_MS,
        "3d": 3 * DAY_MS,
        f"{slo_window_days}d": slo_window_days * DAY_MS,
    }


@dataclass
class Figures:
    """One refresh's values, label tuples to numbers, gauge by gauge."""

    spend: dict[tuple[str, str], float] = field(default_factory=dict)
    reserved: dict[tuple[str], float] = field(default_factory=dict)
    mrr: dict[tuple[str], float] = field(default_factory=dict)
    remaining: dict[tuple[str], float] = field(default_factory=dict)
    burn: dict[tuple[str, str], float] = field(default_factory=dict)
    champion: dict[tuple[str, str, str], float] = field(default_factory=dict)
    promoted: dict[tuple[str, str], float] = field(default_factory=dict)
    rollout: dict[tuple[str, str], float] = field(default_factory=dict)
    state: dict[tuple[str, str, str], float] = field(default_factory=dict)


def figures(
    ledgers: Mapping[str, Ledger],
    reservations: Reservations,
    burns: Mapping[str, Burn],
    evolutions: Mapping[str, Any],
    tenants: Mapping[str, TenantConfig],
    owns: Any,
    now: int,
    slo_window_days: int,
) -> Figures:
    """The gauges' values for the tenants `owns(tenant)` says are this worker's."""
    out = Figures()
    period = billing_period(now)
    for tenant_id, tenant in tenants.items():
        if owns(tenant_id):
            out.mrr[(tenant_id,)] = tenant.mrr_micros / MICROS_PER_USD
    for tenant_id, ledger in ledgers.items():
        if not owns(tenant_id):
            continue
        for cost_center, micros in ledger.spend.get(period, {}).items():
            out.spend[(tenant_id, cost_center)] = micros / MICROS_PER_USD
    for tenant_id, held in reservations.tenants():
        if owns(tenant_id):
            out.reserved[(tenant_id,)] = held.total / MICROS_PER_USD
    for tenant_id, burn in burns.items():
        config = tenants.get(tenant_id)
        if config is None or not owns(tenant_id):
            continue
        for label, window_ms in burn_windows(slo_window_days).items():
            good, bad = burn.counts(now, window_ms)
            out.burn[(tenant_id, label)] = burn_rate(good, bad, config.slo_target)
        good, bad = burn.counts(now, slo_window_days * DAY_MS)
        out.remaining[(tenant_id,)] = budget_remaining(good, bad, config.slo_target)
    for key, raw in evolutions.items():
        tenant_id, _, family = key.partition("/")
        if not owns(tenant_id):
            continue
        evolution = Evolution.from_json(raw)
        rollout = Rollout.from_json(raw.get("rollout"), evolution)
        if rollout.champion is None:
            continue
        out.champion[(tenant_id, family, rollout.champion)] = 1.0
        if rollout.since_ms:
            out.promoted[(tenant_id, family)] = rollout.since_ms / 1000
        out.rollout[(tenant_id, family)] = rollout.percent / 100
        out.state[(tenant_id, family, rollout.state)] = 1.0
    return out


def publish(metrics: Metrics, values: Figures) -> None:
    """Replace every owned-state gauge's series with this refresh's."""
    for gauge, series in (
        (metrics.spend, values.spend),
        (metrics.reserved, values.reserved),
        (metrics.mrr, values.mrr),
        (metrics.budget_remaining, values.remaining),
        (metrics.burn_rate, values.burn),
        (metrics.champion, values.champion),
        (metrics.champion_promoted, values.promoted),
        (metrics.champion_rollout, values.rollout),
        (metrics.champion_state, values.state),
    ):
        gauge.clear()
        for labels, value in series.items():
            gauge.labels(*labels).set(value)


def register(worker: Worker) -> None:
    """Refresh the gauges on a timer, from the tables of the partitions this worker owns."""
    settings = worker.settings
    tables = worker.tables

    @worker.app.timer(REFRESH_S)  # type: ignore[untyped-decorator]
    async def refresh_owned_state() -> None:
        owned = worker.owned(settings.topic(topics.TASKS))
        values = figures(
            tables["ledger"].data,
            worker.reservations,
            tables["burn"].data,
            tables["evolution"].data,
            worker.config.tenants,
            lambda tenant: partition_of(tenant, settings.topic_partitions) in owned,
            now_ms(),
            settings.slo_window_days,
        )
        publish(worker.metrics, values)
