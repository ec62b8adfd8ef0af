"""A table's store reads its changelog back in bulk: values, deletions, where it stopped."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP

from agents.restore import STORE_URL, BulkRestoredStore, register_store
from agents.transactions import changelog_write
from lapverse_streams.broker.engines import Broker
from tests.conftest import ENGINE

pytestmark = pytest.mark.kafka


def test_restore_applies_sets_and_deletions_then_resumes_where_it_stopped(
    broker: Broker,
) -> None:
    asyncio.run(restore_twice(broker.url))


def test_restore_under_read_committed_skips_aborted_transactions(broker: Broker) -> None:
    if ENGINE != "kafka":
        pytest.skip("Tansu has no transactions")
    asyncio.run(restore_committed_only(broker.url))


async def restore_twice(url: str) -> None:
    table, store = await changelog_table(url)
    name = table.changelog_topic.get_topic_name()
    p0, p1 = TP(name, 0), TP(name, 1)
    await write(url, table, [(0, "a", 1), (0, "b", 2), (0, "a", 3), (0, "b", None), (1, "c", 4)])

    assert await store.restore([p0, p1]) == 5
    assert dict(store.data) == {"a": 3, "c": 4}  # the last value of each key; b deleted
    assert (store.persisted_offset(p0), store.persisted_offset(p1)) == (3, 0)

    await write(url, table, [(0, "d", 5), (1, "c", None)])
    assert await store.restore([p0, p1]) == 2  # only what came after the first restore
    assert dict(store.data) == {"a": 3, "d": 5}
    assert (store.persisted_offset(p0), store.persisted_offset(p1)) == (4, 1)
    assert await store.restore([p0, p1]) == 0  # nothing new: no read at all


async def restore_committed_only(url: str) -> None:
    table, store = await changelog_table(url)
    table.app.lapverse_read_committed = True  # as agents/transactions.use_read_committed sets
    name = table.changelog_topic.get_topic_name()
    servers = url.removeprefix("kafka://")
    producer = AIOKafkaProducer(bootstrap_servers=servers, transactional_id=name)
    await producer.start()
    try:
        for key, value, commit in (("e", 1, True), ("f", 2, False), ("g", 3, True)):
            await producer.begin_transaction()
            record = changelog_write(table, 0, key, value)
            await producer.send_and_wait(name, record.value, record.key, partition=0)
            await (producer.commit_transaction() if commit else producer.abort_transaction())
    finally:
        await producer.stop()

    await store.restore([TP(name, 0)])
    assert dict(store.data) == {"e": 1, "g": 3}
    assert store.persisted_offset(TP(name, 0)) == 4  # e 0, marker 1, f 2, marker 3, g 4


async def changelog_table(url: str) -> tuple[Any, BulkRestoredStore]:
    """A table of an app that never starts, on this store, with its changelog created."""
    register_store()
    app = faust.App(f"restore-{uuid.uuid4().hex[:8]}", broker=url, store=STORE_URL)
    table = app.Table("t", partitions=2)
    admin = AIOKafkaAdminClient(bootstrap_servers=url.removeprefix("kafka://"))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(table.changelog_topic.get_topic_name(), 2, 1)])
    finally:
        await admin.close()
    store = table.data
    assert isinstance(store, BulkRestoredStore)
    return table, store


async def write(url: str, table: Any, writes: list[tuple[int, str, int | None]]) -> None:
    """Changelog records as the governor writes them: (partition, key, value or None)."""
    producer = AIOKafkaProducer(bootstrap_servers=url.removeprefix("kafka://"))
    await producer.start()
    try:
        for partition, key, value in writes:
            record = changelog_write(table, partition, key, value)
            await producer.send_and_wait(
                record.topic, record.value, record.key, partition=partition
            )
    finally:
        await producer.stop()
