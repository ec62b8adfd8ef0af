"""The gateway's Kafka side: produce requests, await decisions, keep a view of task state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from lapverse_streams.broker.assign import assign_all
from lapverse_streams.clock import now_ms
from lapverse_streams.domain.batch import REPLAYED, REPLY_ONLY, REQUEST_ID
from lapverse_streams.events import topics
from lapverse_streams.events.champion_models import ChampionChanged, ChampionPromoted
from lapverse_streams.events.codec import Headers, PoisonMessage, decode, header, parse_data
from lapverse_streams.events.deadletter import Consumed, DeadLetters, Send
from lapverse_streams.events.models import (
    CloudEvent,
    CompetitionCompleted,
    CompetitionDecision,
    TaskDecision,
    TaskResult,
    TaskStarted,
    TenantConfig,
    WorkerStatus,
)
from lapverse_streams.gateway.champion_view import ChampionView
from lapverse_streams.gateway.health import RecentTasks
from lapverse_streams.gateway.view import (
    CompetitionState,
    CompetitionView,
    Recent,
    Store,
    TaskState,
    TaskView,
    TenantFigures,
    remove_stale_stores,
    store_path,
)
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.settings import Settings

__all__ = ["Bridge", "BrokerUnavailable", "CompetitionState", "Reply", "Request", "TaskState"]

log = logging.getLogger(__name__)
READER = "gateway-reader"
DECISIONS = ("task.accepted", "task.rejected", "competition.accepted", "competition.rejected")
CHAMPION_EVENTS = (
    "champion.promoted",
    "champion.stepped",
    "champion.rolled-back",
    "champion.pinned",
    "champion.unpinned",
)
MAX_WORKERS = 256  # heartbeats kept for /api/status; the least recently updated go first
DEAD_LETTER_TIMEOUT_S = 10.0
PRODUCE_TIMEOUT_MS = 5_000
MAX_BATCH_BYTES = 512 * 1024  # below the broker's default message.max.bytes (1 MiB)
Handler = Callable[[str, CloudEvent, Consumed], None]


class BrokerUnavailable(Exception):
    """The request could not be written to Kafka."""


@dataclass(frozen=True)
class Reply:
    """A decision as the gateway received it."""

    data: dict[str, Any]
    replayed: bool


@dataclass(frozen=True)
class Request:
    """A request record to write: its value, its headers and the id its decision will carry."""

    value: bytes
    headers: list[tuple[str, bytes]]
    request_id: str


class Bridge:
    """Producer plus a consumer of decisions and results (all partitions, no group)."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        tenants: Mapping[str, TenantConfig] | None = None,
        dead_letter_sink: Send | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.dead_letters = DeadLetters(dead_letter_sink or self.send_dead_letter, self._count)
        self._store = Store(store_path(settings.data_dir))
        self.tasks = TaskView(Recent(self._store, "tasks", settings.gateway_view_max_tasks))
        self.competitions = CompetitionView(
            Recent(self._store, "rounds", settings.gateway_view_max_rounds)
        )
        self.champions = ChampionView(self._store, settings.gateway_view_max_champions)
        self.figures = TenantFigures(
            tenants if tenants is not None else {}, settings.default_latency_objective_ms
        )
        self.recent = RecentTasks(settings.health_window_s * 1000)  # for the health score
        self.workers: dict[str, dict[str, Any]] = {}
        self.connected = False
        self._waiters: dict[str, asyncio.Future[Reply]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._producing = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        name = settings.topic
        self._handlers: dict[str, tuple[tuple[str, ...], Handler]] = {
            name(topics.TASK_DECISIONS): (DECISIONS, self._on_decision),
            name(topics.TASK_RESULTS): (("task.completed", "task.failed"), self._on_result),
            name(topics.TASK_PROGRESS): (("task.started",), self._on_started),
            name(topics.COMPETITION_RESULTS): (("competition.completed",), self._on_completed),
            name(topics.WORKER_STATUS): (("worker.status",), self._on_worker_status),
            name(topics.CHAMPIONS): (CHAMPION_EVENTS, self._on_champion),
        }

    async def start(self) -> None:
        """Connect the producer and start reading decisions and results from the beginning."""
        remove_stale_stores(self.settings.data_dir)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            acks="all",
            request_timeout_ms=PRODUCE_TIMEOUT_MS,
            linger_ms=2,
            # A batch request's records fit one produce batch: aiokafka sends one batch per
            # partition per request, and a full batch makes the next send wait for a round trip.
            max_batch_size=MAX_BATCH_BYTES,
        )
        await self._producer.start()
        self._producing.set()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=self.settings.isolation_level,
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        self._consumer = consumer
        await assign_all(consumer, list(self._handlers))
        self.connected = True
        self._reader = asyncio.create_task(self._read(), name=READER)

    async def stop(self) -> None:
        """Stop reading, flush the producer and remove the view's file."""
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer:
            await self._consumer.stop()
        if self._producer:
            self._producing.clear()
            await self._producer.stop()
        self._store.close()

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=2000)
                self.connected = True
            except KafkaError as exc:
                self.connected = False
                log.warning("reading decisions failed", extra={"error": str(exc)})
                await asyncio.sleep(1)
                continue
            # Decisions first, then a turn of the loop so the requests they wake answer
            # before the results, starts and heartbeats of the same fetch are applied.
            decisions = self.settings.topic(topics.TASK_DECISIONS)
            answered = False
            for tp, messages in sorted(batches.items(), key=lambda b: b[0].topic != decisions):
                if tp.topic != decisions and not answered:
                    answered = True
                    await asyncio.sleep(0)
                for message in messages:
                    record = Consumed(
                        tp.topic,
                        tp.partition,
                        message.offset,
                        message.key,
                        message.value,
                        list(message.headers or ()),
                    )
                    await self.on_record(record)

    async def on_record(self, record: Consumed) -> None:
        """Apply one record to the view, or dead-letter it; never raises."""
        try:
            self.apply(record)
        except Exception as exc:  # any bad record: the reader must stay alive for every caller
            await self.dead_letters.failed(READER, record, exc)

    def apply(self, record: Consumed) -> None:
        """Validate a record, then apply it; raises (leaving the view as it was) if it is bad."""
        # Validated before anything is written: a bad record leaves no trace in the view.
        if record.value is None and record.topic == self.settings.topic(topics.WORKER_STATUS):
            self.workers.pop(_text(record.key), None)  # a tombstone on the compacted topic
            return
        event, short = decode(record.value)
        expected, handle = self._handlers[record.topic]
        if short not in expected:
            raise PoisonMessage("unknown_type", f"{short!r} does not belong on {record.topic}")
        handle(short, event, record)

    def _on_decision(self, short: str, event: CloudEvent, record: Consumed) -> None:
        decision: TaskDecision | CompetitionDecision
        if short.startswith("task."):
            decision = parse_data(event, TaskDecision)
        else:
            decision = parse_data(event, CompetitionDecision)
        tenant = decision.request.tenant
        _agree(record, event, tenant, decision.tags.tenant_id)
        request_id = header(record.headers, REQUEST_ID)
        waiter = self._waiters.pop(request_id, None) if request_id else None
        if waiter is not None and not waiter.done():
            waiter.set_result(Reply(event.data, header(record.headers, REPLAYED) == "true"))
        if header(record.headers, REPLY_ONLY):
            return
        if isinstance(decision, TaskDecision):
            if self.tasks.decide(tenant, decision) and decision.status == "rejected":
                self.figures.rejected(tenant)
        else:
            self.competitions.decide(tenant, decision)

    def _on_result(self, short: str, event: CloudEvent, record: Consumed) -> None:
        result = parse_data(event, TaskResult)
        tenant = result.tags.tenant_id
        _agree(record, event, tenant)
        if result.status != short.removeprefix("task."):
            raise PoisonMessage("wrong_schema", f"a {short} record with status {result.status!r}")
        if self.tasks.finish(tenant, result):
            self.figures.finished(tenant, result)
            failed = result.status == "failed"
            self.recent.add(result.finished_at_ms, tenant, failed, result.duration_ms, now_ms())

    def _on_started(self, short: str, event: CloudEvent, record: Consumed) -> None:
        started = parse_data(event, TaskStarted)
        _agree(record, event, started.tags.tenant_id)
        self.tasks.start(started.tags.tenant_id, started.task_id)

    def _on_completed(self, short: str, event: CloudEvent, record: Consumed) -> None:
        completed = parse_data(event, CompetitionCompleted)
        _agree(record, event, completed.tenant, completed.tags.tenant_id)
        self.competitions.complete(completed.tenant, completed)

    def _on_champion(self, short: str, event: CloudEvent, record: Consumed) -> None:
        changed: ChampionPromoted | ChampionChanged
        if short == "champion.promoted":
            changed = parse_data(event, ChampionPromoted)
        else:
            changed = parse_data(event, ChampionChanged)
        _agree(record, event, changed.tenant, changed.tags.tenant_id)
        self.champions.apply(short, changed)
        command_id = changed.command_id if isinstance(changed, ChampionChanged) else None
        waiter = self._waiters.pop(command_id, None) if command_id else None
        if waiter is not None and not waiter.done():
            waiter.set_result(Reply(event.data, False))

    def _on_worker_status(self, short: str, event: CloudEvent, record: Consumed) -> None:
        status = parse_data(event, WorkerStatus)
        _agree(record, event, status.worker_id)
        self.workers[status.worker_id] = event.data
        if len(self.workers) > MAX_WORKERS:
            oldest = min(self.workers, key=lambda w: int(self.workers[w]["updatedAtMs"]))
            del self.workers[oldest]

    def _count(self, agent: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.dlq.labels(agent, reason).inc()

    async def send_dead_letter(
        self, key: bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        """Produce a dead letter to `lapverse-dlq` (waiting for the producer if it is starting)."""
        await asyncio.wait_for(self._producing.wait(), DEAD_LETTER_TIMEOUT_S)
        assert self._producer is not None
        await asyncio.wait_for(
            self._producer.send_and_wait(
                self.settings.topic(topics.DLQ), value, key=key, headers=headers
            ),
            DEAD_LETTER_TIMEOUT_S,
        )

    async def submit(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        request_id: str,
    ) -> Reply | None:
        """Write a request to `topic` and wait briefly for its decision; None means pending."""
        assert self._producer is not None
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        try:
            try:
                await asyncio.wait_for(
                    self._producer.send_and_wait(
                        self.settings.topic(topic), value, key=key, headers=headers
                    ),
                    timeout=self._produce_timeout_s,
                )
            except (KafkaError, TimeoutError) as exc:
                self.connected = False
                raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
            self.connected = True
            try:
                return await asyncio.wait_for(
                    asyncio.shield(waiter), self.settings.decision_timeout_ms / 1000
                )
            except TimeoutError:
                return None
        finally:
            self._waiters.pop(request_id, None)

    async def submit_many(
        self, topic: str, key: bytes, requests: Sequence[Request], wait_s: float
    ) -> list[Reply | BrokerUnavailable | None]:
        """Write requests as one produce batch, then wait up to wait_s for their decisions.

        Per request: its decision, None when it did not arrive in time (pending), or
        BrokerUnavailable when its record was not written. Raises BrokerUnavailable when
        none was written.
        """
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[Reply]] = [loop.create_future() for _ in requests]
        for request, waiter in zip(requests, waiters, strict=True):
            self._waiters[request.request_id] = waiter
        try:
            failures = await self._write(self.settings.topic(topic), key, requests)
            written = [w for w, failed in zip(waiters, failures, strict=True) if failed is None]
            if not written:
                raise next(f for f in failures if f is not None)
            if wait_s > 0:
                await asyncio.wait(written, timeout=wait_s)
            return [
                failed or (waiter.result() if waiter.done() else None)
                for waiter, failed in zip(waiters, failures, strict=True)
            ]
        finally:
            for request in requests:
                self._waiters.pop(request.request_id, None)

    async def _write(
        self, topic: str, key: bytes, requests: Sequence[Request]
    ) -> list[BrokerUnavailable | None]:
        """Hand every record to the producer, then await their deliveries together.

        Per record: None once the broker acknowledged it, else why it was not written.
        """
        assert self._producer is not None
        deliveries: list[asyncio.Future[Any]] = []
        stopped: BrokerUnavailable | None = None
        try:
            async with asyncio.timeout(self._produce_timeout_s):
                for request in requests:
                    deliveries.append(
                        await self._producer.send(
                            topic, request.value, key=key, headers=request.headers
                        )
                    )
                await asyncio.wait(deliveries)
        except (KafkaError, TimeoutError) as exc:
            stopped = BrokerUnavailable(str(exc) or type(exc).__name__)
        failures = [_failure(d) for d in deliveries]
        failures += [stopped or BrokerUnavailable("not sent")] * (len(requests) - len(deliveries))
        self.connected = stopped is None and not any(failures)
        return failures

    @property
    def _produce_timeout_s(self) -> float:
        return self.settings.decision_timeout_ms / 1000 + PRODUCE_TIMEOUT_MS / 1000

    async def publish(self, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
        """Write a configuration record, wait for the broker's acknowledgement: its position."""
        assert self._producer is not None
        try:
            written = await asyncio.wait_for(
                self._producer.send_and_wait(self.settings.topic(topic), value, key=key), 10
            )
        except (KafkaError, TimeoutError) as exc:
            self.connected = False
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
        return written.partition, written.offset


def _failure(delivery: asyncio.Future[Any]) -> BrokerUnavailable | None:
    """Why a record was not written, or None when the broker acknowledged it."""
    if not delivery.done():
        # Still in the producer: it may yet be written, but it is not acknowledged now.
        delivery.add_done_callback(_ignore_outcome)
        return BrokerUnavailable("no acknowledgement in time")
    if delivery.cancelled():
        return BrokerUnavailable("cancelled")
    error = delivery.exception()
    return BrokerUnavailable(str(error) or type(error).__name__) if error else None


def _ignore_outcome(delivery: asyncio.Future[Any]) -> None:
    """Retrieve a late delivery's outcome, so asyncio does not log it as never retrieved."""
    if not delivery.cancelled():
        delivery.exception()


def _text(key: bytes | None) -> str:
    return key.decode("utf-8", "replace") if key is not None else ""


def _agree(record: Consumed, event: CloudEvent, *owners: str) -> None:
    """The record key, the CloudEvent subject and the data's owner(s) must all be one."""
    key = _text(record.key)
    names = {key, event.subject or "", *owners}
    if len(names) != 1:
        raise PoisonMessage(
            "key_mismatch",
            f"record key {key!r}, subject {event.subject!r} and data {sorted(set(owners))} differ",
        )
