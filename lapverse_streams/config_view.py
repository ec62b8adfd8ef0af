"""Tenants and flags, read from their compacted topics into memory by every process."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from lapverse_streams.broker.assign import assign_all, at_fetch_highwater
from lapverse_streams.events import topics
from lapverse_streams.events.codec import PoisonMessage, decode, parse_data
from lapverse_streams.events.deadletter import Consumed, DeadLetters
from lapverse_streams.events.models import FlagConfig, TenantConfig
from lapverse_streams.settings import Settings

log = logging.getLogger(__name__)


def hash_api_key(api_key: str) -> str:
    """sha256 hex of an API key (keys are random 256-bit secrets, so no salt is needed)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class ConfigView:
    """Latest tenant and flag configuration; ready once caught up with the topics' ends."""

    def __init__(self, settings: Settings, dead_letters: DeadLetters | None = None) -> None:
        self._settings = settings
        self.dead_letters = dead_letters  # set by the process before start()
        self.tenants: dict[str, TenantConfig] = {}
        self.flags: dict[str, dict[str, object]] = {}
        self._tenant_by_key_hash: dict[str, str] = {}
        self._ready = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._partitions: list[TopicPartition] = []
        self._polls = 0
        self._written: dict[tuple[str, int, bytes | None], int] = {}  # by apply_written()
        self._caught_up = False

    async def start(self) -> None:
        """Assign every partition of both topics from the beginning and start reading."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=self._settings.isolation_level,
            fetch_max_wait_ms=self._settings.fetch_max_wait_ms,  # catch_up() polls twice
        )
        await consumer.start()
        self._consumer = consumer
        names = [self._settings.topic(topics.TENANTS), self._settings.topic(topics.FLAGS)]
        self._partitions = await assign_all(consumer, names)
        await consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._run(), name="config-view")

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, messages in batches.items():
                for message in messages:
                    await self._apply_or_dead_letter(tp.topic, message)
            self._caught_up = await at_fetch_highwater(self._consumer, self._partitions)
            self._polls += 1
            if self._caught_up:
                self._ready.set()

    def apply_written(
        self, topic: str, key: bytes, value: bytes, partition: int, offset: int
    ) -> None:
        """Apply a record this process just wrote (read-your-writes), ahead of the reader.

        The reader may still be behind it: older records of the same key are then skipped
        when they arrive, so they cannot undo this one (a fresh API key, say).
        """
        self.apply(topic, key, value)
        self._written[(topic, partition, key)] = offset

    async def _apply_or_dead_letter(self, topic: str, message: Any) -> None:
        """Apply a record; one that cannot be applied is dead-lettered and the view goes on."""
        written = self._written.get((topic, message.partition, message.key))
        if written is not None:
            if message.offset < written:
                return  # superseded by a record this process wrote and applied already
            del self._written[(topic, message.partition, message.key)]
        try:
            self.apply(topic, message.key, message.value)
        except Exception as exc:  # any bad record: the view must stay alive for everyone else
            record = Consumed(
                topic,
                message.partition,
                message.offset,
                message.key,
                message.value,
                list(message.headers or ()),
            )
            if self.dead_letters is None:
                log.error("bad config record", extra={"topic": topic, "offset": message.offset})
            else:
                await self.dead_letters.failed("config-view", record, exc)

    def apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of either topic (a None value deletes); raises if it is bad."""
        name = key.decode("utf-8", "replace") if key else ""
        if topic.endswith(topics.TENANTS):
            self._apply_tenant(name, value)
        elif value is None:
            self.flags.pop(name, None)
        else:
            event, _ = decode(value)
            flag = parse_data(event, FlagConfig)
            if flag.flag_key != name or event.subject not in (None, name):
                raise PoisonMessage("key_mismatch", "the record key is not the flag key")
            self.flags[flag.flag_key] = flag.definition

    def _apply_tenant(self, tenant_id: str, value: bytes | None) -> None:
        tenant = None
        if value is not None:  # validate first: a bad record leaves the tenant as it was
            event, _ = decode(value)
            tenant = parse_data(event, TenantConfig)
            if tenant.tenant_id != tenant_id or event.subject not in (None, tenant_id):
                raise PoisonMessage("key_mismatch", "the record key is not the tenant id")
        old = self.tenants.pop(tenant_id, None)
        for key_hash in old.api_key_hashes if old else ():
            self._tenant_by_key_hash.pop(key_hash, None)
        if tenant is None:
            return
        self.tenants[tenant.tenant_id] = tenant
        for key_hash in tenant.api_key_hashes:
            self._tenant_by_key_hash[key_hash] = tenant.tenant_id

    def tenant_for_api_key(self, api_key: str) -> TenantConfig | None:
        """The tenant an API key belongs to, if any."""
        tenant_id = self._tenant_by_key_hash.get(hash_api_key(api_key))
        return self.tenants.get(tenant_id) if tenant_id else None

    async def catch_up(self, timeout_s: float = 2.0) -> None:
        """Wait until everything written to the topics so far is applied (read-your-writes)."""
        if self._consumer is None:
            return
        first = self._polls + 2  # a poll that started after this call has completed
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._polls < first or not self._caught_up:
            if asyncio.get_running_loop().time() > deadline:
                log.warning("configuration view is lagging", extra={"timeoutS": timeout_s})
                return
            await asyncio.sleep(0.005)

    @property
    def ready(self) -> bool:
        """True once the view has caught up with the topics at start."""
        return self._ready.is_set()

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until caught up."""
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    async def stop(self) -> None:
        """Stop reading and close the consumer."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer:
            await self._consumer.stop()
