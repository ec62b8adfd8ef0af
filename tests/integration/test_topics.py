"""The project's topics exist with the partitions, cleanup policy and retention they need."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from lapverse_streams.broker.engines import Broker
from lapverse_streams.broker.topics import ensure_topics, topic_configs
from lapverse_streams.events import topics
from lapverse_streams.settings import Settings
from tests.conftest import ENGINE, Stack

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(ENGINE != "kafka", reason="DescribeConfigs is read from Apache Kafka"),
]


async def describe(settings: Settings, names: list[str]) -> dict[str, dict[str, str]]:
    """Topic name -> its configuration, as the broker reports it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        configs: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs(resources):
            for error_code, _message, _type, name, entries in response.resources:
                assert error_code == 0, name
                configs[name] = {entry[0]: entry[1] for entry in entries}
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()
    for name, count in partitions.items():
        configs[name]["partitions"] = str(count)
    return configs


def test_ensure_topics_creates_them_with_their_policies(broker: Broker) -> None:
    settings = Settings(
        broker_url=broker.url, topic_prefix=f"t{uuid.uuid4().hex[:8]}.", topic_partitions=3
    )
    asyncio.run(ensure_topics(settings))
    asyncio.run(ensure_topics(settings))  # idempotent
    configs = asyncio.run(describe(settings, [settings.topic(name) for name in topics.ALL]))
    for name in topics.ALL:
        config = configs[settings.topic(name)]
        assert config["partitions"] == "3", name
        policy = "compact" if name in topics.COMPACTED else "delete"
        assert config["cleanup.policy"] == policy, name
        for key, value in topic_configs(settings, name).items():  # retention too
            assert config[key] == value, (name, key)
    assert configs[settings.topic(topics.DLQ)]["retention.ms"] == str(settings.dlq_retention_ms)


def test_the_tables_changelogs_are_compacted(stack: Stack) -> None:
    settings = stack.settings
    names = [
        f"{settings.topic_prefix}{settings.app_id}-{table}-changelog"
        for table in ("dedup", "ledger", "burn", "evolution", "rounds")
    ]
    configs = asyncio.run(describe(settings, names))
    for name in names:
        assert configs[name]["cleanup.policy"] == "compact", name
        assert configs[name]["partitions"] == str(settings.topic_partitions), name
