"""A group-less consumer that notes when decisions appear on a topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer

from lapverse_streams.broker.assign import assign_all

ACCEPTED = b"io.lapverse.task.accepted.v1"
COMPLETED = b"io.lapverse.task.completed.v1"


@dataclass(frozen=True)
class Arrival:
    """One decision seen by the observer (kept only when tracking keys)."""

    seen_at: float  # time.monotonic() of the fetch that returned it
    created_ms: int  # the record's timestamp, set by the producing process
    key: str  # data.idempotencyKey, or "" when absent


@dataclass
class Watch:
    """The first tracked arrival that `accept` takes, once there is one."""

    accept: Callable[[Arrival], bool]
    arrival: Arrival | None = None


class DecisionObserver:
    """Counts the records of every partition of a topic (decisions or results), from offset 0."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        target: int | None = None,
        marker: bytes = ACCEPTED,
        track_keys: bool = False,
        on_record: Callable[[bytes], None] | None = None,
        isolation_level: str = "read_uncommitted",
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._marker = marker
        self._track_keys = track_keys
        self._on_record = on_record
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.target = target
        self.count = 0
        self.marked = 0  # records whose value contains the marker (the expected event type)
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.first_batch = 0
        self.target_at: float | None = None
        self.min_created_ms: int | None = None
        self.max_created_ms: int | None = None
        self.arrivals: list[Arrival] = []
        self._watches: list[Watch] = []
        self._isolation_level = isolation_level  # read_committed under exactly once

    async def start(self) -> None:
        """Assign every partition and start reading in the background."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=self._isolation_level,
            # Tansu holds every fetch for the whole wait: at aiokafka's 500 ms the observer saw
            # a one-second phase in a few steps and put the raw loop at 9,700/s while its
            # records' timestamps said 16,400/s. Apache Kafka answers as soon as data arrives.
            fetch_max_wait_ms=10,
        )
        await consumer.start()
        self._consumer = consumer
        partitions = await assign_all(consumer, [self._topic])
        # Tansu 0.6 answers "latest" with the last batch's base offset + 1, not the high
        # watermark, so seeking to the end is unreliable: always read from the beginning.
        await consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._run(), name="bench-observer")

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=10_000)
            if not batches:
                continue
            seen_at = time.monotonic()
            for records in batches.values():
                for record in records:
                    self._note(seen_at, record.timestamp, record.value or b"")

    def _note(self, seen_at: float, created_ms: int, value: bytes) -> None:
        self.count += 1
        self.last_at = seen_at
        if self._marker in value:
            self.marked += 1
        if self._on_record is not None:
            self._on_record(value)
        if self.first_at is None or seen_at == self.first_at:
            self.first_at = seen_at
            self.first_batch += 1
        if self.min_created_ms is None or created_ms < self.min_created_ms:
            self.min_created_ms = created_ms
        if self.max_created_ms is None or created_ms > self.max_created_ms:
            self.max_created_ms = created_ms
        if self.target is not None and self.count == self.target:
            self.target_at = seen_at
        if self._track_keys:
            data = orjson.loads(value).get("data", {})
            arrival = Arrival(seen_at, created_ms, str(data.get("idempotencyKey", "")))
            self.arrivals.append(arrival)
            for watch in self._watches:
                if watch.arrival is None and watch.accept(arrival):
                    watch.arrival = arrival

    def watch(self, accept: Callable[[Arrival], bool]) -> Watch:
        """Look for the earliest tracked arrival that `accept` takes, past and future."""
        found = Watch(accept, next((a for a in self.arrivals if accept(a)), None))
        self._watches.append(found)
        return found

    async def wait_for(
        self,
        done: Callable[[], bool],
        timeout_s: float,
        alive: Callable[[], bool] = lambda: True,
    ) -> bool:
        """Poll until `done`; False on timeout. Raises if `alive` turns false first."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if self._task is not None and self._task.done():
                self._task.result()  # re-raise whatever stopped the observer
                raise RuntimeError("observer stopped")
            if not alive():
                raise RuntimeError("the process under test exited")
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self) -> None:
        """Stop reading and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
