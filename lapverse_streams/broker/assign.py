"""Group-less readers: assign every partition of some topics to one consumer."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition


async def assign_all(
    consumer: AIOKafkaConsumer, names: list[str], timeout_s: float = 10.0
) -> list[TopicPartition]:
    """Assign all partitions of `names` and return them.

    The partitions come from a fresh metadata response: `consumer.topics()` fetches one but
    does not store it, so the consumer's own metadata may not know a topic yet (Tansu sends
    every topic anyway; Apache Kafka does not), and a topic just created may have none yet.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        cluster = await consumer._client.fetch_all_metadata()
        found = {name: cluster.partitions_for_topic(name) for name in names}
        if all(found.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    partitions = [TopicPartition(name, p) for name in names for p in sorted(found[name] or {0})]
    consumer.assign(partitions)
    return partitions


async def at_fetch_highwater(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> bool:
    """True once every partition's position reached the high watermark of its last fetch.

    Not end_offsets(): Tansu 0.6 answers ListOffsets with the last batch's base offset + 1.
    A `read_committed` reader is caught up at the last stable offset instead.
    """
    committed_only = consumer._isolation_level == "read_committed"
    for tp in partitions:
        highwater = consumer.highwater(tp)
        stable = consumer.last_stable_offset(tp) if committed_only else None
        if highwater is not None and stable is not None and stable >= 0:
            highwater = stable  # an open transaction's records are not readable yet
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
