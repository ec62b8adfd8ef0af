"""Phase D: self-compete rounds, from `competition.requested` to `competition.completed`."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.observer import DecisionObserver
from bench.phases import Throughput, measure, observing, running
from bench.procs import spawn_worker
from bench.workload import (
    COST_CENTER,
    MRR_MICROS,
    SOURCE,
    Record,
    now_ms,
    produce,
    tenant_record,
    trace_headers,
)
from lapverse_streams.broker.topics import ensure_topics
from lapverse_streams.domain.admission import Policy
from lapverse_streams.domain.self_compete import variant_cost_micros
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import CompetitionRequested, type_name
from lapverse_streams.settings import Settings
from lapverse_streams.variants.forecast import ForecastFamily, demo_input

ACCEPTED = type_name("competition.accepted").encode()
COMPLETED = type_name("competition.completed").encode()
# Every topic a round crosses, in order: where the counts stop is where rounds got stuck.
PIPELINE = (
    topics.TASK_DECISIONS,
    topics.VARIANT_RUNS,
    topics.VARIANT_RESULTS,
    topics.COMPETITION_JOINS,
    topics.COMPETITION_RESULTS,
)


@dataclass(frozen=True)
class CompetitionRun:
    """Phase D: how fast one worker settled N pre-produced rounds, and how they ended."""

    completed: Throughput  # competition.completed on lapverse-competition-results
    accepted: int  # competition.accepted decisions seen by the end of the phase
    with_champion: int  # completed rounds that named a champion
    variant_statuses: dict[str, int]  # ok / failed / timeout / missing over completed rounds
    records_by_topic: dict[str, int]  # records seen per pipeline topic by the end

    def to_json(self) -> dict[str, Any]:
        """The phase's entry in results.json: the throughput figures, then the round counts."""
        return {
            **dataclasses.asdict(self.completed),
            "accepted": self.accepted,
            "with_champion": self.with_champion,
            "variant_statuses": dict(self.variant_statuses),
            "records_by_topic": dict(self.records_by_topic),
        }


class RoundTally:
    """Counts champions and variant outcomes of the `competition.completed` records it is fed."""

    def __init__(self) -> None:
        self.with_champion = 0
        self.variant_statuses: Counter[str] = Counter()

    def __call__(self, value: bytes) -> None:
        """Note one record of the competition-results topic."""
        data = orjson.loads(value).get("data") or {}
        if data.get("champion"):
            self.with_champion += 1
        for summary in (data.get("variants") or {}).values():
            self.variant_statuses[str(summary.get("status"))] += 1


def round_input(seq: int) -> dict[str, Any]:
    """The AirPassengers demo input scaled by a per-round factor, so no two rounds are alike."""
    base = demo_input()
    scale = 1 + (seq % 1000) / 10_000
    return {**base, "series": [round(point * scale, 4) for point in base["series"]]}


def competition_record(tenant_id: str, event_id: str, seq: int) -> Record:
    """A `competition.requested` event over the four forecast variants; id = idempotency key."""
    request = CompetitionRequested(
        tenant=tenant_id, cost_center=COST_CENTER, input=round_input(seq)
    )
    event = envelope("competition.requested", event_id, tenant_id, request, now_ms(), SOURCE)
    return Record(tenant_id.encode(), encode(event), trace_headers())


def competition_records(count: int, tenants: list[str], id_prefix: str) -> list[Record]:
    """`count` round requests with unique ids, round-robin over the tenants."""
    return [
        competition_record(tenants[i % len(tenants)], f"{id_prefix}-{i:06d}", i)
        for i in range(count)
    ]


def check_affordable(rounds: int, tenants: int) -> None:
    """Fail early if the rounds would meet the margin guardrail (and be rejected, not run)."""
    round_cost_micros = variant_cost_micros() * len(ForecastFamily.variants)
    per_tenant = -(-rounds // tenants) * round_cost_micros
    limit = int(MRR_MICROS * Policy().margin_ratio)
    if per_tenant > limit:
        raise ValueError(f"{rounds} rounds cost {per_tenant} micros per tenant, over {limit}")


async def competition_phase(
    settings: Settings,
    tenants: list[str],
    rounds: int,
    id_prefix: str,
    work_dir: Path,
    timeout_s: float,
) -> CompetitionRun:
    """Phase D: pre-produce N rounds under a fresh prefix, then one worker settles them."""
    check_affordable(rounds, len(tenants))
    bootstrap = settings.bootstrap_servers
    await ensure_topics(settings)
    await produce(
        bootstrap, settings.topic(topics.TENANTS), [tenant_record(settings, t) for t in tenants]
    )
    requests = competition_records(rounds, tenants, id_prefix)
    await produce(bootstrap, settings.topic(topics.SELF_COMPETE), requests)
    tally = RoundTally()
    counters = {
        name: DecisionObserver(bootstrap, settings.topic(name), marker=ACCEPTED)
        for name in PIPELINE[:-1]
    }
    results = DecisionObserver(
        bootstrap,
        settings.topic(topics.COMPETITION_RESULTS),
        target=rounds,
        marker=COMPLETED,
        on_record=tally,
    )
    async with contextlib.AsyncExitStack() as observers:
        for observer in (*counters.values(), results):
            await observers.enter_async_context(observing(observer))
        child = await spawn_worker(settings, "worker-d", work_dir)
        async with running(child):
            completed = await measure(child, results, rounds, timeout_s)
        by_topic = {name: observer.count for name, observer in counters.items()}
    return CompetitionRun(
        completed=completed,
        accepted=counters[topics.TASK_DECISIONS].marked,
        with_champion=tally.with_champion,
        variant_statuses=dict(sorted(tally.variant_statuses.items())),
        records_by_topic={**by_topic, topics.COMPETITION_RESULTS: results.count},
    )
