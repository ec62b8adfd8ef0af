"""Table recovery that trusts fetch high watermarks, not ListOffsets.

Tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1 instead of the
log end, so Faust's recovery stopped reading changelogs early and a restarted worker lost
table state. Fetch responses carry the true high watermark; recovery asks for that instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_DEADLINE_S = 10.0


async def fetched_highwaters(
    bootstrap_servers: str | list[str], partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """High watermark of each partition as a fetch response reports it."""
    if not partitions:
        return {}
    async with probe_consumer(bootstrap_servers, partitions) as probe:
        reported = await probe.end_offsets(partitions)
        for tp, end in reported.items():
            probe.seek(tp, max(end - 1, 0))
        # An empty partition reports 0 on both brokers: no fetch needs to confirm it.
        unconfirmed = [tp for tp in partitions if reported[tp] > 0]
        deadline = asyncio.get_running_loop().time() + FETCH_DEADLINE_S
        while any(probe.highwater(tp) is None for tp in unconfirmed):
            if asyncio.get_running_loop().time() > deadline:
                break
            await probe.getmany(timeout_ms=200, max_records=1)
        return {tp: max(probe.highwater(tp) or 0, reported[tp]) for tp in partitions}


@contextlib.asynccontextmanager
async def probe_consumer(
    bootstrap_servers: str | list[str],
    partitions: list[TopicPartition],
    isolation_level: str = "read_uncommitted",
    **config: Any,
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started group-less consumer assigned `partitions`, stopped on the way out."""
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation_level,
        fetch_max_wait_ms=50,  # a partition with nothing past the seek must not hold us up
        **config,
    )
    await probe.start()
    try:
        probe.assign(partitions)
        yield probe
    finally:
        await probe.stop()


def use_fetched_highwaters() -> None:
    """Make Faust's consumer thread report fetched high watermarks (idempotent)."""
    thread_class: Any = faust_aiokafka.AIOKafkaConsumerThread

    async def _highwaters(self: Any, partitions: list[TopicPartition]) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        if self.consumer.in_transaction:
            return {tp: consumer.last_stable_offset(tp) for tp in partitions}
        servers = consumer._client._bootstrap_servers
        by_tp = {TopicPartition(tp.topic, tp.partition): tp for tp in partitions}
        fetched = await fetched_highwaters(servers, list(by_tp))
        return {by_tp[tp]: offset for tp, offset in fetched.items()}

    thread_class._highwaters = _highwaters
