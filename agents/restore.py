"""Table restore in bulk: a memory store that reads its own changelog partitions back.

Faust's recovery hands every changelog record through its consumer thread, the conductor
and a queue, one `asyncio.wait_for` per record: about 100 µs a record, so a worker holding
20,000 requests of state (37,000 changelog records) spent 3.7 s of its restart there. This
store reads the partitions it is assigned itself, with a group-less consumer and whole
fetches (about 10 µs a record), before Faust's recovery looks at them. It then reports the
offset it reached as its persisted offset, which is how Faust learns a persistent store's
position: recovery finds nothing left and resumes the streams.

Faust's recovery stays the safety net. Whatever this store did not reach (a fetch that
stalled, records written after it looked) Faust reads from where it stopped, and a failed
restore leaves the whole partition to Faust. Either way the table ends as the changelog says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores import STORES
from faust.stores.memory import Store
from faust.tables import TableManager
from faust.transport.drivers.aiokafka import server_list
from faust.types import TP

from agents.highwaters import fetched_highwaters, probe_consumer
from agents.transactions import READ_COMMITTED, committed_ends

log = logging.getLogger(__name__)
STORE_URL = "lapverse-memory://"
STALL_S = 10.0  # no new record for this long: leave the rest to Faust's recovery
FETCH_BYTES = 16 * 1024 * 1024  # per partition; the default 1 MiB made a fetch per 1,300 records
DEFAULT_PORT = 9092


class BulkRestoredStore(Store[Any, Any]):
    """Faust's memory store, restored in bulk on assignment (see the module docstring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.restored: dict[TP, int] = {}  # changelog partition -> offset of its last record read
        self.held: set[TP] = set()  # changelog partitions active here since the last rebalance

    def persisted_offset(self, tp: TP) -> int | None:
        """The offset of the last changelog record this store applied, None before any."""
        return self.restored.get(tp)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        """Restore this table's active changelog partitions before Faust's recovery reads them."""
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        changelog = self.table.changelog_topic.get_topic_name()
        actives = {tp for tp in self.app.assignor.assigned_actives() if tp.topic == changelog}
        for tp in [tp for tp in self.restored if tp not in actives]:
            del self.restored[tp]  # revoked: Faust drops its keys once recovery completes
        for tp in actives - self.held:  # taken on: stale keys of an earlier ownership go
            self._forget_partition(tp.partition)
        self.held = actives
        if not actives:
            return
        started = time.monotonic()
        try:
            applied = await self.restore(sorted(actives))
        except Exception:  # what it applied is consistent; Faust's recovery does the rest
            log.warning("bulk restore of %s failed; Faust recovers it", changelog, exc_info=True)
            return
        log.info(
            "restored %s records of %s in %.2f s",
            applied,
            changelog,
            time.monotonic() - started,
            extra={"table": self.table_name, "partitions": len(actives)},
        )

    async def restore(self, partitions: list[TP]) -> int:
        """Read `partitions` from where this store stopped to their ends; records applied."""
        servers = server_list(self.app.conf.broker, DEFAULT_PORT)
        tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        read_committed = getattr(self.app, "lapverse_read_committed", False)
        # The same ends Faust's recovery measures against (agents/highwaters, transactions).
        ends = await (committed_ends if read_committed else fetched_highwaters)(servers, tps)
        todo = {tp: ends[tp] for tp in tps if self.restored.get(_faust_tp(tp), -1) + 1 < ends[tp]}
        if not todo:
            return 0
        level = READ_COMMITTED if read_committed else "read_uncommitted"
        async with probe_consumer(
            servers, list(todo), level, max_partition_fetch_bytes=FETCH_BYTES
        ) as consumer:
            for tp in todo:  # on from the last record applied, else from the beginning
                after = self.restored.get(_faust_tp(tp))
                if after is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, after + 1)
            return await self._read(consumer, todo)

    async def _read(self, consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> int:
        """Apply fetched records until every partition's last record before its end is in."""
        applied = 0
        left = dict(ends)
        last_progress = time.monotonic()
        while left:
            fetched = await consumer.getmany(timeout_ms=200)
            for tp, records in fetched.items():
                self._apply(tp.partition, records)
                applied += len(records)
                faust_tp = _faust_tp(tp)
                self.restored[faust_tp] = records[-1].offset
                if records[-1].offset + 1 >= left.get(tp, 0):
                    left.pop(tp, None)
            if fetched:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_S:
                log.warning("bulk restore stalled; Faust recovers the rest of %s", sorted(left))
                break
            await asyncio.sleep(0)  # the rebalance runs on the worker's loop: let it breathe
        return applied

    def _apply(self, partition: int, records: Iterable[Any]) -> None:
        """Set or delete each record's key, as the memory store's changelog batch does."""
        table: Any = self.table  # the table's and topic's serializer attributes are untyped
        topic = table.changelog_topic
        loads_key, loads_value = self.app.serializers.loads_key, self.app.serializers.loads_value
        to_key, to_value = table._to_key, table._to_value
        data, partitions = self.data, self._key_partition
        for record in records:
            key = to_key(loads_key(topic.key_type, record.key, serializer=topic.key_serializer))
            if record.value is None:
                data.pop(key, None)
                partitions.pop(key, None)
                continue
            value = loads_value(topic.value_type, record.value, serializer=topic.value_serializer)
            data[key] = to_value(value)
            partitions[key] = partition

    def _forget_partition(self, partition: int) -> None:
        stale = [key for key, p in self._key_partition.items() if p == partition]
        for key in stale:
            self.data.pop(key, None)
            del self._key_partition[key]


class PromptTableManager(TableManager):
    """Faust's table manager without its 1 s sleep before recovery starts.

    The sleep gives tables declared after the worker starts time to register. Every table
    here is declared by `create_worker`, before the app starts, so the sleep only delayed
    each start and restart by a second.
    """

    async def on_start(self) -> None:
        """Register the tables' changelog channels and start recovery at once."""
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def _faust_tp(tp: TopicPartition) -> TP:
    return TP(tp.topic, tp.partition)


def register_store() -> None:
    """Make `lapverse-memory://` name this store (idempotent)."""
    STORES.aliases["lapverse-memory"] = f"{__name__}:BulkRestoredStore"
