"""Group-less readers: assign every partition of some topics to one consumer."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def assign_all(consumer: AIOKafkaConsumer, names: list[str]) -> list[TopicPartition]:
    """Assign all partitions of `names` (metadata refreshed first) and return them."""
    await consumer.topics()  # refreshes metadata so partitions_for_topic is complete
    partitions = [
        TopicPartition(name, p)
        for name in names
        for p in sorted(consumer.partitions_for_topic(name) or {0})
    ]
    consumer.assign(partitions)
    return partitions


async def at_fetch_highwater(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> bool:
    """True once every partition's position reached the high watermark of its last fetch.

    Not end_offsets(): Tansu 0.6 answers ListOffsets with the last batch's base offset + 1.
    """
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
