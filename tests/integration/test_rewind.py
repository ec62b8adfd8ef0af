"""Seeking back to committed offsets also rewinds partitions that have no commit yet."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.rewind import seek_back
from lapverse_streams.broker.engines import Broker

pytestmark = pytest.mark.kafka
RECORDS = 50


def test_seek_back_rewinds_uncommitted_partitions_and_keeps_commits(
    broker: Broker,
) -> None:
    asyncio.run(read_past_then_seek_back(broker.url.removeprefix("kafka://")))


async def read_past_then_seek_back(servers: str) -> None:
    """Read every record of two partitions, commit one, seek back: where is each now?"""
    names = [f"rewind-{uuid.uuid4().hex[:8]}", f"changelog-{uuid.uuid4().hex[:8]}"]
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1) for name in names])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        for name in names:
            for partition in (0, 1):
                for i in range(RECORDS):
                    await producer.send(name, b"%d" % i, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=f"rewind-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(name, p) for name in names for p in (0, 1)]
        consumer.assign(partitions)
        while [await consumer.position(tp) for tp in partitions] != [RECORDS] * len(partitions):
            await consumer.getmany(timeout_ms=500)
        committed = TopicPartition(names[0], 1)
        await consumer.commit({committed: 20})

        await seek_back(consumer, skip_topics={names[1]})

        assert await consumer.position(TopicPartition(names[0], 0)) == 0  # no commit: rewound
        assert await consumer.position(committed) == 20
        for p in (0, 1):  # skipped topics are left where they were
            assert await consumer.position(TopicPartition(names[1], p)) == RECORDS
        records = await consumer.getmany(TopicPartition(names[0], 0), timeout_ms=5000)
        assert [r.offset for r in records[TopicPartition(names[0], 0)]][:1] == [0]
    finally:
        await consumer.stop()
