"""The gateway's Kafka side: produce requests, await decisions, keep a view of task state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from lapverse_streams.broker.assign import assign_all
from lapverse_streams.domain.batch import REPLAYED, REPLY_ONLY, REQUEST_ID
from lapverse_streams.events import topics
from lapverse_streams.events.codec import PoisonMessage, decode, header
from lapverse_streams.settings import Settings

log = logging.getLogger(__name__)
DECISIONS = ("task.accepted", "task.rejected", "competition.accepted", "competition.rejected")


class BrokerUnavailable(Exception):
    """The request could not be written to Kafka."""


@dataclass(frozen=True)
class Reply:
    """A decision as the gateway received it."""

    data: dict[str, Any]
    replayed: bool


@dataclass
class TaskState:
    """What the gateway knows of one task."""

    tenant: str
    decision: dict[str, Any]
    result: dict[str, Any] | None = None
    started: bool = False

    @property
    def status(self) -> str:
        """The decision's status, `running` once an executor took it, then the result's."""
        if self.result is not None:
            return str(self.result["status"])
        if self.started and self.decision["status"] == "accepted":
            return "running"
        return str(self.decision["status"])


@dataclass
class CompetitionState:
    """What the gateway knows of one self-compete round."""

    tenant: str
    decision: dict[str, Any]
    completed: dict[str, Any] | None = None


@dataclass
class Bridge:
    """Producer plus a consumer of decisions and results (all partitions, no group)."""

    settings: Settings
    tasks: dict[str, TaskState] = field(default_factory=dict)
    competitions: dict[str, CompetitionState] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    _started_early: set[str] = field(default_factory=set)  # read before their decision
    _waiters: dict[str, asyncio.Future[Reply]] = field(default_factory=dict)
    _producer: AIOKafkaProducer | None = None
    _consumer: AIOKafkaConsumer | None = None
    _reader: asyncio.Task[None] | None = None
    connected: bool = False

    async def start(self) -> None:
        """Connect the producer and start reading decisions and results from the beginning."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            acks="all",
            request_timeout_ms=5_000,
            linger_ms=2,
        )
        await self._producer.start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        self._consumer = consumer
        names = [
            self.settings.topic(topics.TASK_DECISIONS),
            self.settings.topic(topics.TASK_RESULTS),
            self.settings.topic(topics.TASK_PROGRESS),
            self.settings.topic(topics.COMPETITION_RESULTS),
            self.settings.topic(topics.WORKER_STATUS),
        ]
        await assign_all(consumer, names)
        self.connected = True
        self._reader = asyncio.create_task(self._read(), name="gateway-reader")

    async def stop(self) -> None:
        """Stop reading and flush the producer."""
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer:
            await self._consumer.stop()
        if self._producer:
            await self._producer.stop()

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
            for messages in batches.values():
                for message in messages:
                    self._on_record(message.value, list(message.headers or ()))

    def _on_record(self, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        try:
            event, short = decode(value)
        except PoisonMessage:
            return
        data = event.data
        if short in DECISIONS:
            request_id = header(headers, REQUEST_ID)
            waiter = self._waiters.pop(request_id, None) if request_id else None
            if waiter is not None and not waiter.done():
                waiter.set_result(Reply(data, header(headers, REPLAYED) == "true"))
            if header(headers, REPLY_ONLY):
                return
            if short.startswith("task.") and self._is_new(data):
                started = data["taskId"] in self._started_early
                self._started_early.discard(data["taskId"])
                self.tasks[data["taskId"]] = TaskState(event.subject or "", data, started=started)
            elif (
                short.startswith("competition.") and data["competitionId"] not in self.competitions
            ):
                self.competitions[data["competitionId"]] = CompetitionState(
                    event.subject or "", data
                )
        elif short in ("task.completed", "task.failed"):
            state = self.tasks.get(data["taskId"])
            if state is not None and state.result is None:
                state.result = data
        elif short == "task.started":
            task = self.tasks.get(data["taskId"])
            if task is None:
                self._started_early.add(data["taskId"])
            else:
                task.started = True
        elif short == "worker.status":
            self.workers[data["workerId"]] = data
        elif short == "competition.completed":
            competition = self.competitions.get(data["competitionId"])
            if competition is not None and competition.completed is None:
                competition.completed = data

    def _is_new(self, decision: dict[str, Any]) -> bool:
        """A task's first decision, or a later one for its key after the old one expired.

        A re-emitted decision is the stored one, byte for byte, so its time is not later.
        """
        known = self.tasks.get(decision["taskId"])
        return known is None or decision["decidedAtMs"] > known.decision["decidedAtMs"]

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
                    timeout=self.settings.decision_timeout_ms / 1000 + 5,
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

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Write a configuration record and wait for the broker's acknowledgement."""
        assert self._producer is not None
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(self.settings.topic(topic), value, key=key), 10
            )
        except (KafkaError, TimeoutError) as exc:
            self.connected = False
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
