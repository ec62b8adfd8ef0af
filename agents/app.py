"""Composition root of the worker: the Faust app, its topics, tables and agents."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.serializers import codecs

from agents import executor, gauges, governor, heartbeat, services, tournament, web
from agents import kaggle as kaggle_agent
from agents.fetchwait import use_fetch_max_wait
from agents.highwaters import use_fetched_highwaters
from agents.restore import STORE_URL, PromptTableManager, register_store
from agents.rewind import keep_records_across_seek_back
from agents.transactions import Transactions, leave_offsets_to_transactions, use_read_committed
from lapverse_streams.clients.kaggle import KagglePipeline
from lapverse_streams.config_view import ConfigView
from lapverse_streams.domain.budget import Burn
from lapverse_streams.domain.ledger import Ledger
from lapverse_streams.domain.state import DedupRecord, DedupStore, Reservations
from lapverse_streams.events import topics
from lapverse_streams.events.deadletter import DeadLetters
from lapverse_streams.handlers.base import DrillLimits, Services, TaskHandler, load_handlers
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.settings import Settings
from lapverse_streams.variants.base import VariantFamily, load_families


@dataclass
class Worker:
    """Everything a worker process owns."""

    app: faust.App
    settings: Settings
    config: ConfigView
    metrics: Metrics
    tables: dict[str, Any]
    services: services.ExternalServices
    dead_letters: DeadLetters
    reservations: Reservations
    transactions: Transactions | None = None  # exactly once: the stateful agents' producers

    def owned(self, topic: str) -> set[int]:
        """Partitions of `topic` assigned to this worker; none while it rebalances."""
        if self.app.consumer is None or self.app.rebalancing:
            return set()
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}


class StoredValue(codecs.Codec):
    """A table value codec from a type's own to_bytes / from_bytes."""

    def __init__(self, dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any]) -> None:
        super().__init__()
        self._to, self._from = dumps, loads

    def _dumps(self, s: Any) -> bytes:
        return self._to(s)

    def _loads(self, s: bytes) -> Any:
        return self._from(s)


# The governor's tables hold typed values (domain/state.py); the others hold JSON.
STORED = {"dedup": "lapverse-dedup", "ledger": "lapverse-ledger", "burn": "lapverse-burn"}
codecs.register(STORED["dedup"], StoredValue(DedupRecord.to_bytes, DedupRecord.from_bytes))
codecs.register(STORED["ledger"], StoredValue(Ledger.to_bytes, Ledger.from_bytes))
codecs.register(STORED["burn"], StoredValue(Burn.to_bytes, Burn.from_bytes))


def raw_topic(app: faust.App, *names: str) -> faust.TopicT:
    """A topic of raw bytes: agents decode CloudEvents themselves."""
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def create_worker(
    settings: Settings,
    handlers: dict[str, TaskHandler] | None = None,
    families: dict[str, VariantFamily] | None = None,
    kaggle: KagglePipeline | None = None,
) -> Worker:
    """Build the Faust app with the governor, executor, tournament and Kaggle agents."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    use_fetched_highwaters()
    use_fetch_max_wait(settings.fetch_max_wait_ms)
    register_store()
    app = faust.App(
        f"{settings.topic_prefix}{settings.app_id}",
        broker=settings.broker_url,
        store=STORE_URL,  # Faust's memory store, restored in bulk (agents/restore.py)
        TableManager=PromptTableManager,
        datadir=str(Path(settings.data_dir) / "{conf.name}-data"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        producer_acks=-1,
        processing_guarantee="at_least_once",  # exactly once is ours: agents/transactions.py
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # Tansu holds a join for the rebalance timeout; keep it short so restarts rejoin fast.
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=1.0,
        consumer_group_instance_id=settings.worker_instance_id or None,
        table_standby_replicas=settings.standby_replicas,
        stream_wait_empty=False,
    )
    keep_records_across_seek_back(app)
    tables: dict[str, Any] = {
        name: app.Table(name, partitions=settings.topic_partitions)
        for name in ("dedup", "ledger", "burn", "evolution", "rounds")
    }
    for name, codec in STORED.items():  # writes, and recovery reading the changelog back
        tables[name].value_serializer = codec
        tables[name].changelog_topic.value_serializer = codec
    reservations = Reservations()  # derived from the dedup store, whoever writes it
    dedup_store: Any = tables["dedup"].data  # Faust's memory store: its dict is ours
    dedup_store.data = DedupStore(reservations)
    metrics = Metrics()
    external = services.build_services(settings, metrics)
    dlq = raw_topic(app, settings.topic(topics.DLQ))

    async def send_dead_letter(key: bytes | None, value: bytes | None, headers: Any) -> None:
        await dlq.send(key=key, value=value, headers=headers, force=True)

    dead_letters = DeadLetters(
        send_dead_letter, lambda agent, reason: metrics.dlq.labels(agent, reason).inc()
    )
    worker = Worker(
        app,
        settings,
        ConfigView(settings, dead_letters),
        metrics,
        tables,
        external,
        dead_letters,
        reservations,
    )
    services.own(app, external)
    if settings.processing_guarantee == "exactly_once":
        worker.transactions = own_transactions(app, settings)
    families = families if families is not None else load_families()
    # Everything keyed by tenant id meets in the governor, co-partitioned with its tables.
    inbound = raw_topic(
        app,
        *(
            settings.topic(name)
            for name in (
                topics.TASKS,
                topics.TASK_RESULTS,
                topics.SELF_COMPETE,
                topics.COMPETITION_JOINS,
                topics.CHAMPION_COMMANDS,
            )
        ),
    )
    decisions = raw_topic(app, settings.topic(topics.TASK_DECISIONS))
    sinks = {
        "decisions": decisions,
        "dlq": dlq,
        "runs": raw_topic(app, settings.topic(topics.VARIANT_RUNS)),
        "completions": raw_topic(app, settings.topic(topics.COMPETITION_RESULTS)),
        "champions": raw_topic(app, settings.topic(topics.CHAMPIONS)),
        "flags": raw_topic(app, settings.topic(topics.FLAGS)),
        "kaggle": raw_topic(app, settings.topic(topics.KAGGLE)),
        "commands": raw_topic(app, settings.topic(topics.CHAMPION_COMMANDS)),
    }
    if handlers is None:
        handlers = load_handlers(
            Services(external.news_ai, DrillLimits(settings.drill_max_sleep_ms)),
            drills_enabled=settings.drills_enabled,
        )
    governor.register(worker, inbound, sinks, families, frozenset(handlers))
    executor.register(
        worker,
        decisions,
        raw_topic(app, settings.topic(topics.TASK_RESULTS)),
        raw_topic(app, settings.topic(topics.TASK_PROGRESS)),
        handlers,
    )
    # Runs and results are keyed by competition id: the join lives on their partitions.
    runs_name = settings.topic(topics.VARIANT_RUNS)
    results = raw_topic(app, settings.topic(topics.VARIANT_RESULTS))
    tournament.register_runner(worker, raw_topic(app, runs_name), results, families)
    tournament.register_joiner(
        worker,
        raw_topic(app, runs_name, settings.topic(topics.VARIANT_RESULTS)),
        raw_topic(app, settings.topic(topics.COMPETITION_JOINS)),
        tables["rounds"],
        runs_name,
        external.share,
    )

    kaggle_breaker = kaggle_agent.build_breaker(settings, worker.metrics)
    external.breakers.append(kaggle_breaker)
    kaggle_agent.register(
        worker,
        sinks["kaggle"],
        sinks["commands"],
        kaggle if kaggle is not None else kaggle_agent.build_pipeline(settings),
        kaggle_breaker,
    )
    heartbeat.register(worker, raw_topic(app, settings.topic(topics.WORKER_STATUS)))
    gauges.register(worker)

    web.register(worker)

    class ConfigViewOwner(faust.Service):
        """Owns the configuration view's lifecycle inside the worker."""

        async def on_start(self) -> None:
            await worker.config.start()

        async def on_stop(self) -> None:
            await worker.config.stop()

    app.service(ConfigViewOwner)
    return worker


# The agents that keep tables, and the topics whose partition p is their task p.
TRANSACTIONAL = {
    "governor": (
        topics.TASKS,
        topics.TASK_RESULTS,
        topics.SELF_COMPETE,
        topics.COMPETITION_JOINS,
        topics.CHAMPION_COMMANDS,
    ),
    "joiner": (topics.VARIANT_RUNS, topics.VARIANT_RESULTS),
}


def own_transactions(app: faust.App, settings: Settings) -> Transactions:
    """Exactly once: transactional producers for the stateful agents, on this app's partitions.

    Each rebalance stops the producers of the revoked partitions and starts those of the
    assigned ones before table recovery and the seek to committed offsets: starting one
    fences the previous owner and waits until its open transaction has ended.
    """
    transactions = Transactions(settings.bootstrap_servers, app.conf.id)
    owned = {agent: {settings.topic(t) for t in names} for agent, names in TRANSACTIONAL.items()}
    use_read_committed(app)
    leave_offsets_to_transactions(app, set().union(*owned.values()))

    def partitions(agent: str, tps: Any) -> set[int]:
        return {tp.partition for tp in tps if tp.topic in owned[agent]}

    tables = app.tables
    recover = tables.on_rebalance

    async def prepare_then_recover(
        assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
    ) -> None:
        # Starting a producer waits for its id's open transaction to end, so the offsets and
        # changelogs read next include everything the previous owner committed.
        for agent in owned:
            await transactions.prepare(agent, partitions(agent, assigned))
        await recover(assigned, revoked, newly_assigned, generation_id)

    tables.on_rebalance = prepare_then_recover  # type: ignore[method-assign]

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def release(sender: Any, *args: Any, **kwargs: Any) -> None:
        (revoked,) = args
        for agent in owned:
            await transactions.release(agent, partitions(agent, revoked))

    class TransactionsOwner(faust.Service):
        """Stops the producers with the worker."""

        async def on_stop(self) -> None:
            await transactions.stop()

    app.service(TransactionsOwner)
    return transactions
