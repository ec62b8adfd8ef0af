"""Exactly-once on Apache Kafka: one Kafka transaction per consumed partition and batch.

Faust's own `processing_guarantee="exactly_once"` names a transaction after the partition a
record is *sent to*, which does not fit agents whose outputs go to other partitions and to
topics the app never consumes (docs/decisions/0003). Here the agent that holds state owns
its transactions, in the Kafka Streams manner: partition number `p` of its co-partitioned
input topics is one task, with one transactional producer
(`{group}-{agent}-{p}`). A batch's records of partition `p` are processed, then the
task's changelog writes, its output records and its consumed offsets are committed in one
transaction. Nothing of the batch is visible to a `read_committed` reader before that, and
all of it is afterwards.

- **Fencing.** A worker that takes partition `p` over starts `{group}-{agent}-{p}` at once
  (`prepare`), which aborts whatever transaction the previous owner left open and fences
  that owner out: a zombie's later commit fails.
- **Failure.** A transaction that cannot commit leaves the worker's in-memory tables ahead
  of the log. The worker then stops (the caller crashes the app); its successor, or its
  restart, rebuilds the tables from the committed changelog.
- **Reading.** Every consumer of the worker reads `read_committed` (`use_read_committed`),
  and so do the gateway, the configuration view and table recovery. Recovery stops at the
  last committed record (`committed_ends`), not at the high watermark: a transaction's
  commit marker is the last offset of a partition and is never delivered as a record.
- **Offsets.** The task's offsets go into its transaction (`send_offsets_to_transaction`);
  Faust's own commit leaves those topics alone (`leave_offsets_to_transactions`), so it can
  never move an offset back behind a transaction's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

from agents.highwaters import probe_consumer
from lapverse_streams.events.codec import Headers

T = TypeVar("T")
log = logging.getLogger(__name__)
FAIL_STOP_GRACE_S = 10.0
EXIT_FAILED_COMMIT = 70  # EX_SOFTWARE
READ_COMMITTED = "read_committed"
ENDS_DEADLINE_S = 10.0
FIRST_WINDOW = 64  # records read back from the stable end to find the last committed one


@dataclass(frozen=True)
class Produce:
    """One record a transaction writes."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    partition: int | None = None


class Collector:
    """Collects an agent's writes while it works on one partition, for one transaction."""

    def __init__(self) -> None:
        self._records: list[Produce] | None = None

    @property
    def collecting(self) -> bool:
        """True between `start` and `stop`: writes go here, not to Faust's producer."""
        return self._records is not None

    def start(self) -> None:
        """Begin collecting."""
        self._records = []

    def add(self, record: Produce) -> None:
        """Collect one write."""
        assert self._records is not None, "not collecting"
        self._records.append(record)

    def stop(self) -> list[Produce]:
        """Stop collecting and hand over what was collected."""
        records, self._records = self._records or [], None
        return records


class Positions:
    """The next offset each consumed partition expects, to drop records seen twice.

    Faust can hand a record to an agent twice in one assignment: records fetched before the
    seek that ends a rebalance stay queued (agents/rewind.py) and are fetched again after
    it. At least once, that is a harmless redelivery. Exactly once, every record a worker
    processed is committed (or the worker stopped), so a second copy is dropped.
    """

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}

    def fresh(self, records: Iterable[T], where: Callable[[T], tuple[str, int, int]]) -> list[T]:
        """The records not seen before, in order; they count as seen from now on."""
        kept = []
        for record in records:
            topic, partition, offset = where(record)
            if offset < self._next.get((topic, partition), 0):
                continue
            self._next[(topic, partition)] = offset + 1
            kept.append(record)
        return kept


class TransactionsUnavailable(RuntimeError):
    """The broker refused transactions (Tansu has none)."""


class Transactions:
    """The transactional producers of one worker, one per agent and partition number."""

    def __init__(self, bootstrap_servers: str, group_id: str, timeout_ms: int = 10_000) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.timeout_ms = timeout_ms
        self._producers: dict[tuple[str, int], AIOKafkaProducer] = {}
        self._locks: defaultdict[tuple[str, int], asyncio.Lock] = defaultdict(asyncio.Lock)

    def transactional_id(self, agent: str, partition: int) -> str:
        """The id that fences every earlier owner of this agent's partition."""
        return f"{self.group_id}-{agent}-{partition}"

    async def prepare(self, agent: str, partitions: Iterable[int]) -> None:
        """Start the producers of newly owned partitions: their open transactions abort."""
        await asyncio.gather(*(self._locked_producer(agent, p) for p in partitions))

    async def release(self, agent: str, partitions: Iterable[int]) -> None:
        """Stop the producers of revoked partitions once their transactions have ended."""
        for partition in partitions:
            async with self._locks[(agent, partition)]:
                producer = self._producers.pop((agent, partition), None)
                if producer is not None:
                    await producer.stop()

    async def commit(
        self,
        agent: str,
        partition: int,
        records: Sequence[Produce],
        offsets: Mapping[TopicPartition, int],
    ) -> None:
        """Write `records` and commit `offsets` (next offset to read) in one transaction."""
        if not records and not offsets:
            return
        async with self._locks[(agent, partition)]:
            producer = await self._producer(agent, partition)
            sent: list[asyncio.Future[Any]] = []
            try:
                async with producer.transaction():
                    for r in records:
                        sent.append(
                            await producer.send(
                                r.topic,
                                r.value,
                                key=r.key,
                                headers=r.headers,
                                partition=r.partition,
                            )
                        )
                    if offsets:
                        await producer.send_offsets_to_transaction(dict(offsets), self.group_id)
                    await asyncio.gather(*sent)
            finally:  # a failed transaction fails its sends too: collect them, quietly
                await asyncio.gather(*sent, return_exceptions=True)

    async def stop(self) -> None:
        """Stop every producer; an open transaction is aborted by the next owner."""
        producers, self._producers = list(self._producers.values()), {}
        await asyncio.gather(*(p.stop() for p in producers), return_exceptions=True)

    async def _locked_producer(self, agent: str, partition: int) -> AIOKafkaProducer:
        async with self._locks[(agent, partition)]:
            return await self._producer(agent, partition)

    async def _producer(self, agent: str, partition: int) -> AIOKafkaProducer:
        """The partition's producer, started on first use; call with its lock held.

        Two producers of one transactional id would fence each other.
        """
        key = (agent, partition)
        producer = self._producers.get(key)
        if producer is not None:
            return producer
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            transactional_id=self.transactional_id(agent, partition),
            transaction_timeout_ms=self.timeout_ms,
            acks="all",
            linger_ms=0,
        )
        try:
            await producer.start()  # InitProducerId: aborts the previous owner's transaction
        except Exception as exc:
            await producer.stop()
            raise TransactionsUnavailable(
                f"the broker at {self.bootstrap_servers} refused a transactional producer "
                f"({type(exc).__name__}: {exc}); LAPVERSE_PROCESSING_GUARANTEE=exactly_once "
                "needs Apache Kafka (Tansu has no transactions)"
            ) from exc
        self._producers[key] = producer
        return producer


async def produce_all(app: Any, records: Sequence[Produce]) -> None:
    """At least once: hand every record to the producer at once, then await every delivery.

    The agent acknowledges its batch only after this returns, so Faust (which flushes its
    producer before committing, too) never commits an offset whose outputs or changelog
    writes are not on the broker. One batch is one burst of sends, not one awaited send per
    record; aiokafka packs the burst into a produce request per partition leader.
    """
    await asyncio.gather(*await hand_over(app, records))


async def hand_over(app: Any, records: Sequence[Produce]) -> list[Awaitable[Any]]:
    """Hand `records` to the app's producer in order; their deliveries, not yet awaited."""
    producer = app.producer
    return [
        await producer.send(r.topic, r.key, r.value, r.partition, None, r.headers) for r in records
    ]


async def stop_after_failed_write(app: Any, agent: str, exc: BaseException) -> None:
    """Stop the worker: its tables are ahead of the log now. Exit hard if stopping hangs.

    Its restart, or the worker that takes its partitions over, rebuilds the tables from the
    committed changelogs. Faust's orderly stop has been seen to hang after leaving the
    group; nothing it would still write matters more than stopping.
    """
    log.critical("the %s could not write a batch; the worker stops", agent, exc_info=exc)
    asyncio.get_running_loop().call_later(FAIL_STOP_GRACE_S, os._exit, EXIT_FAILED_COMMIT)
    await app.crash(exc)


def by_partition(items: Iterable[T], partition_of: Callable[[T], int]) -> dict[int, list[T]]:
    """Items grouped by partition number, each group in its original order."""
    groups: dict[int, list[T]] = defaultdict(list)
    for item in items:
        groups[partition_of(item)].append(item)
    return dict(groups)


def changelog_write(table: Any, partition: int, key: Any, value: Any) -> Produce:
    """A Faust table's changelog record, serialized as the table itself would; None deletes."""
    topic = table.changelog_topic
    raw_key, _ = topic.prepare_key(key, table.key_serializer)
    raw_value = None if value is None else topic.prepare_value(value, table.value_serializer)[0]
    return Produce(topic.get_topic_name(), raw_key, raw_value, [], partition)


def offsets_of(records: Iterable[tuple[str, int, int]]) -> dict[TopicPartition, int]:
    """The offsets to commit after (topic, partition, offset) records: each highest + 1."""
    ends: dict[TopicPartition, int] = {}
    for topic, partition, offset in records:
        tp = TopicPartition(topic, partition)
        ends[tp] = max(ends.get(tp, 0), offset + 1)
    return ends


async def committed_ends(
    bootstrap_servers: str | list[str], partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """For each partition, the offset after its last committed record (0 if it has none).

    The stable end (`read_committed` ListOffsets) lies past the last commit marker, an offset
    no consumer ever receives; table recovery waiting for it would never end. This reads a
    window back from the stable end, wider each time, until it finds a record.
    """
    if not partitions:
        return {}
    async with probe_consumer(bootstrap_servers, partitions, READ_COMMITTED) as probe:
        firsts = await probe.beginning_offsets(partitions)
        stable = await probe.end_offsets(partitions)
        ends = {tp: firsts[tp] for tp in partitions}
        window = FIRST_WINDOW
        todo = [tp for tp in partitions if stable[tp] > firsts[tp]]
        deadline = time.monotonic() + ENDS_DEADLINE_S
        while todo and time.monotonic() < deadline:
            starts = {tp: max(firsts[tp], stable[tp] - window) for tp in todo}
            probe.assign(todo)
            for tp, start in starts.items():
                probe.seek(tp, start)
            found = await _last_offsets(probe, stable, deadline)
            for tp, offset in found.items():
                ends[tp] = offset + 1
            todo = [tp for tp in todo if tp not in found and starts[tp] > firsts[tp]]
            window *= 8
        return ends


async def _last_offsets(
    probe: AIOKafkaConsumer, stable: Mapping[TopicPartition, int], deadline: float
) -> dict[TopicPartition, int]:
    """Read the assigned partitions up to their stable ends; the last offset seen in each."""
    last: dict[TopicPartition, int] = {}
    assigned = probe.assignment()
    while time.monotonic() < deadline:
        positions = {tp: await probe.position(tp) for tp in assigned}
        if all(positions[tp] >= stable[tp] for tp in assigned):
            break
        for tp, batch in (await probe.getmany(timeout_ms=200)).items():
            if batch:
                last[tp] = max(last.get(tp, -1), batch[-1].offset)
    return last


def use_read_committed(app: Any) -> None:
    """Make this app's worker consumer read `read_committed`, and its recovery stop at commits.

    Call before the app starts: the consumer reads the level when it starts.
    """
    _install()
    app.lapverse_read_committed = True


def leave_offsets_to_transactions(app: Any, topics: set[str]) -> None:
    """Make this app's Faust commit skip `topics`: transactions commit their offsets.

    Faust commits the offsets of acknowledged events on its own timer. For a topic whose
    offsets a transaction commits, that commit would at best repeat the transaction's and at
    worst, arriving late, move the group's offset back behind it.
    """
    _install()
    app.lapverse_transactional_topics = frozenset(topics)


def _install() -> None:
    """Patch Faust's consumer classes once; each patch acts only for apps that ask for it."""
    thread_class: Any = faust_aiokafka.AIOKafkaConsumerThread
    consumer_class: Any = faust_aiokafka.Consumer
    if getattr(thread_class._create_worker_consumer, "lapverse_transactions", False):
        return  # installed, and nothing replaced it since
    create = thread_class._create_worker_consumer
    highwaters = thread_class._highwaters
    commit = consumer_class._commit

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        if getattr(self.app, "lapverse_read_committed", False):
            consumer._isolation_level = READ_COMMITTED  # read by the fetcher made at start()
        return consumer

    async def _highwaters(self: Any, partitions: list[TopicPartition]) -> Mapping[Any, int]:
        if not getattr(self.app, "lapverse_read_committed", False):
            result: Mapping[Any, int] = await highwaters(self, partitions)
            return result
        servers = self._ensure_consumer()._client._bootstrap_servers
        by_tp = {TopicPartition(tp.topic, tp.partition): tp for tp in partitions}
        ends = await committed_ends(servers, list(by_tp))
        return {by_tp[tp]: offset for tp, offset in ends.items()}

    async def _commit(self: Any, offsets: Mapping[Any, int]) -> bool:
        skip: frozenset[str] = getattr(self.app, "lapverse_transactional_topics", frozenset())
        rest = {tp: offset for tp, offset in offsets.items() if tp.topic not in skip}
        if not rest:
            return True
        done: bool = await commit(self, rest)
        return done

    _create_worker_consumer.lapverse_transactions = True  # type: ignore[attr-defined]
    thread_class._create_worker_consumer = _create_worker_consumer
    thread_class._highwaters = _highwaters
    consumer_class._commit = _commit
