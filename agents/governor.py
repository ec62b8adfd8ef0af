"""Governor agent: admission, ledger and burn for the tenants of its partitions."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import faust

from agents.gauges import partition_of
from agents.governor_spans import TracedGovernor
from agents.inflight import InFlight
from agents.transactions import (
    Positions,
    Produce,
    Transactions,
    by_partition,
    changelog_write,
    offsets_of,
    produce_all,
    stop_after_failed_write,
)
from lapverse_streams.clock import now_ms
from lapverse_streams.domain import champions
from lapverse_streams.domain.admission import Policy
from lapverse_streams.domain.batch import SOURCE, Inbound, Observation, Outbound
from lapverse_streams.domain.rollout import RolloutPolicy
from lapverse_streams.domain.state import Write
from lapverse_streams.events import topics
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.variants.base import VariantFamily

if TYPE_CHECKING:
    from agents.app import Worker

AGENT = "governor"


def register(
    worker: Worker,
    inbound: faust.TopicT,
    sinks: dict[str, faust.TopicT],
    families: dict[str, VariantFamily],
    task_types: frozenset[str],
) -> None:
    """Attach the governor agent to the app; `task_types` are those with a handler."""
    settings = worker.settings
    tables = worker.tables
    sources = {
        settings.topic(topics.TASKS): "tasks",
        settings.topic(topics.TASK_RESULTS): "results",
        settings.topic(topics.SELF_COMPETE): "rounds",
        settings.topic(topics.COMPETITION_JOINS): "joins",
        settings.topic(topics.CHAMPION_COMMANDS): "commands",
    }
    governor = TracedGovernor(  # the governor, with a span per record (agents/governor_spans.py)
        records=tables["dedup"].data.data,  # the memory stores' dicts (agents/app.py)
        ledgers=tables["ledger"].data.data,
        burns=tables["burn"].data.data,
        tenants=worker.config.tenants,
        flag_definitions=worker.config.flags,
        policy=Policy(
            settings.margin_ratio,
            settings.budget_min_events,
            settings.rate_limit_per_s,
            settings.rate_limit_burst,
        ),
        environment=settings.environment,
        version=settings.version,
        retention_ms=settings.idempotency_retention_s * 1000,
        clock_ms=now_ms,
        families=families,
        evolutions=tables["evolution"].data.data,
        competition_deadline_ms=settings.competition_deadline_ms,
        task_types=task_types,
        rollout=RolloutPolicy(
            settings.rollout_steps, settings.champion_step_rounds, settings.champion_step_after_ms
        ),
    )

    inflight = InFlight(worker.app, AGENT, settings.batches_in_flight)

    @worker.app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def settle_in_flight(sender: Any, *args: Any, **kwargs: Any) -> None:
        """Faust has flushed the producer: acknowledge what it delivered before moving on."""
        await inflight.drain()

    @worker.app.agent(inbound, name=AGENT)
    async def governor_agent(stream: Any) -> None:
        await worker.config.wait_ready(120)
        async for events in stream.take_events(settings.batch_max, settings.batch_window_s):
            batch = [
                Inbound(
                    sources[e.message.topic],
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                    list(e.message.headers or ()),
                    e.message.topic,
                )
                for e in events
            ]
            if any(
                r.source in ("tasks", "rounds")
                and (r.key or b"").decode(errors="replace") not in worker.config.tenants
                for r in batch
            ):
                await worker.config.catch_up()  # a tenant created a moment ago may not be read yet
            if worker.transactions is None:
                if inflight.failed:
                    return  # a write failed and the worker is stopping: decide nothing more
                out = governor.process(batch)
                # acknowledged once delivered, while the next batch is decided (inflight.py)
                await inflight.send(events, [*changelog_writes(out.writes), *outputs(out.records)])
                observe(worker, out.observations, len(batch))
            else:
                await commit_each_partition(worker.transactions, batch)

    positions = Positions()

    async def commit_each_partition(transactions: Transactions, batch: list[Inbound]) -> None:
        """Exactly once: each partition's share of the batch is decided and committed as one.

        A failed commit leaves the tables ahead of the log, so the worker stops; it (or the
        worker that takes its partitions) rebuilds them from the committed changelogs.
        """
        batch = positions.fresh(batch, lambda r: (r.topic, r.partition, r.offset))
        parts = by_partition(batch, lambda r: r.partition)
        outs = {p: governor.process(part) for p, part in parts.items()}
        try:
            await asyncio.gather(
                *(
                    transactions.commit(
                        AGENT,
                        p,
                        [*changelog_writes(out.writes), *outputs(out.records)],
                        offsets_of((r.topic, r.partition, r.offset) for r in parts[p]),
                    )
                    for p, out in outs.items()
                )
            )
        except Exception as exc:
            await stop_after_failed_write(worker.app, AGENT, exc)
            return
        observe(worker, [o for out in outs.values() for o in out.observations], len(batch))

    def changelog_writes(writes: list[Write]) -> list[Produce]:
        return [changelog_write(tables[w.table], w.partition, w.key, w.value) for w in writes]

    def outputs(records: list[Outbound]) -> list[Produce]:
        return [Produce(sinks[r.sink].get_topic_name(), r.key, r.value, r.headers) for r in records]

    @worker.app.timer(max(1.0, settings.redrive_after_ms / 4000))  # type: ignore[untyped-decorator]
    async def redrive_overdue() -> None:
        """Results can be lost in a crash between execution and commit: run such tasks again."""
        partitions = worker.owned(settings.topic(topics.TASKS))
        if not partitions:
            return
        redriven = governor.redrive(now_ms(), settings.redrive_after_ms, partitions)
        await produce_all(worker.app, outputs(redriven))
        worker.metrics.redrives.inc(len(redriven))

    @worker.app.timer(settings.champion_tick_interval_ms / 1000)  # type: ignore[untyped-decorator]
    async def champion_ticks() -> None:
        """A tick command per active rollout of this worker's tenants: the governor decides on
        it in order with the tenant's other input, so time steps take the normal record path."""
        partitions = worker.owned(settings.topic(topics.CHAMPION_COMMANDS))
        if not partitions:
            return
        now = now_ms()

        def owns(tenant: str) -> bool:
            return partition_of(tenant, settings.topic_partitions) in partitions

        for tenant, family, rollout in champions.active_rollouts(tables["evolution"].data, owns):
            command = champions.tick(tenant, family, rollout.sequence, now)
            key, value = champions.command_record(command, SOURCE)
            await sinks["commands"].send(key=key, value=value, force=True)

    forget_every_s = min(60.0, max(1.0, settings.idempotency_retention_s / 10))

    @worker.app.timer(forget_every_s)  # type: ignore[untyped-decorator]
    async def forget_expired() -> None:
        """Delete dedup records of finished work once the retention period has passed."""
        partitions = worker.owned(settings.topic(topics.TASKS))
        if not partitions:
            return
        tombstones = governor.forget_expired(now_ms(), partitions)
        await produce_all(worker.app, changelog_writes(tombstones))


def observe(worker: Worker, observations: list[Observation], batch_size: int) -> None:
    """Turn the governor's observations into metrics."""
    m = worker.metrics
    m.batch_size.labels("governor").observe(batch_size)
    for o in observations:
        if o.kind == "competition_decision":
            m.decisions.labels(o.reason).inc()
        elif o.kind == "competition":
            observe_round(m, o)
        elif o.kind == "task_decision":
            m.decisions.labels(o.reason).inc()
            outcome = "accepted" if o.reason == "accepted" else "rejected"
            m.tasks.labels(o.task_type, o.tenant, outcome).inc()
        elif o.kind == "replay":
            m.decisions.labels("replayed").inc()
            m.replays.labels(o.tenant).inc()
        elif o.kind == "result":
            m.tasks.labels(o.task_type, o.tenant, o.reason).inc()
            m.task_duration.labels(o.task_type).observe(o.duration_ms)
        elif o.kind == "duplicate_result":
            m.duplicates.labels(o.tenant).inc()
        elif o.kind == "dead_letter":
            m.dlq.labels("governor", o.reason).inc()
        elif o.kind == "rate_limited":
            m.rate_limited.labels(o.tenant).inc()
        elif o.kind == "champion_rolled-back":
            m.champion_rollbacks.labels(o.tenant, o.task_type, o.reason).inc()


def observe_round(m: Metrics, o: Observation) -> None:
    """Metrics of a settled round: count, cost, winner, win rates, promotion."""
    m.competitions.labels(o.tenant).inc()
    m.cost_per_competition.labels(o.tenant).set(o.data["costMicros"] / 1_000_000)
    if o.reason:
        m.variant_wins.labels(o.tenant, o.task_type, o.reason).inc()
    for variant, rate in o.data["winRates"].items():
        m.win_rate.labels(o.tenant, variant).set(rate)
    if o.data["promoted"]:
        m.promotions.labels(o.tenant, o.task_type).inc()
