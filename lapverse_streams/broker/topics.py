"""Create the product's topics with the partition count and cleanup policy they need."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from lapverse_streams.events import topics
from lapverse_streams.settings import Settings


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """Cleanup policy and retention of a topic of the contract (short name)."""
    if name in topics.COMPACTED:
        return {"cleanup.policy": "compact"}
    if name == topics.CHAMPIONS:  # the champions' history is rebuilt from it: kept for good
        return {"cleanup.policy": "delete", "retention.ms": "-1"}
    retention_ms = settings.dlq_retention_ms if name == topics.DLQ else settings.topic_retention_ms
    return {"cleanup.policy": "delete", "retention.ms": str(retention_ms)}


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create every public topic that does not exist yet (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
    try:
        existing = set(await admin.list_topics())
        wanted = []
        for name in topics.ALL:
            full = settings.topic(name)
            if full in existing:
                continue
            configs = topic_configs(settings, name)
            wanted.append(NewTopic(full, settings.topic_partitions, 1, topic_configs=configs))
        for new_topic in wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([new_topic])
    finally:
        await admin.close()
