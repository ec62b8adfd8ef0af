"""The embedded Apache Kafka broker: lifecycle, and the Kafka features aiokafka needs from it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from lapverse_streams.broker.embedded import free_port
from lapverse_streams.broker.kafka import JavaNotFoundError, KafkaBroker, require_java
from tests.conftest import ENGINE

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(ENGINE != "kafka", reason="the Apache Kafka pass covers it"),
]

TIMEOUT_S = 20.0


def _java_or_skip() -> None:
    try:
        require_java()
    except JavaNotFoundError as exc:
        pytest.skip(f"Apache Kafka needs Java 17+: {exc}")


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One Apache Kafka broker for this module."""
    _java_or_skip()
    log = tmp_path_factory.mktemp("kafka") / "kafka.log"
    with KafkaBroker(free_port(), log_path=log) as running:
        yield running


@pytest.fixture
def bootstrap(kafka: KafkaBroker) -> str:
    """host:port of the module broker."""
    return f"{kafka.host}:{kafka.port}"


@pytest.fixture
def prefix() -> str:
    """A fresh topic and group prefix per test."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client."""
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await client.start()
    yield client
    await client.close()


async def _create(admin: AIOKafkaAdminClient, name: str, **configs: str) -> None:
    await admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])


def test_broker_reports_startup_and_memory(kafka: KafkaBroker) -> None:
    assert kafka.pid is not None
    assert kafka.startup_s is not None
    assert kafka.startup_s < 60
    rss = kafka.rss_bytes()
    assert rss is not None
    assert rss < 1024 * 2**20


def test_missing_java_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(JavaNotFoundError, match="OpenJDK 17"):
        require_java(str(tmp_path / "no-java"))


async def test_produce_then_consume(
    admin: AIOKafkaAdminClient, bootstrap: str, prefix: str
) -> None:
    topic = f"{prefix}-events"
    await _create(admin, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), TIMEOUT_S)
    finally:
        await consumer.stop()
    assert (record.key, record.value, record.offset) == (b"k", b"hello", sent.offset)


async def test_consumer_group_commits_offsets(
    admin: AIOKafkaAdminClient, bootstrap: str, prefix: str
) -> None:
    topic, group = f"{prefix}-events", f"{prefix}-group"
    await _create(admin, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in (b"a", b"b"):
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        values = [(await asyncio.wait_for(consumer.getone(), TIMEOUT_S)).value for _ in range(2)]
        await consumer.commit()
    finally:
        await consumer.stop()
    assert values == [b"a", b"b"]
    offsets = await admin.list_consumer_group_offsets(group)
    assert offsets[TopicPartition(topic, 0)].offset == 2


async def test_compacted_topic_config_reads_back(admin: AIOKafkaAdminClient, prefix: str) -> None:
    topic = f"{prefix}-tenants"
    await _create(admin, topic, **{"cleanup.policy": "compact", "retention.ms": "3600000"})
    for _ in range(50):  # a topic just created may not be known to DescribeConfigs yet
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        (resource,) = responses[0].resources
        error_code, _message, _type, name, entries = resource
        if error_code == 0:
            break
        await asyncio.sleep(0.1)
    configs = {entry[0]: entry[1] for entry in entries}
    assert (error_code, name) == (0, topic)
    assert configs["cleanup.policy"] == "compact"
    assert configs["retention.ms"] == "3600000"


async def test_transactional_produce(
    admin: AIOKafkaAdminClient, bootstrap: str, prefix: str
) -> None:
    topic = f"{prefix}-outputs"
    await _create(admin, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{prefix}-tx")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"after")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        values = [(await asyncio.wait_for(consumer.getone(), TIMEOUT_S)).value for _ in range(2)]
    finally:
        await consumer.stop()
    assert values == [b"committed", b"after"]
