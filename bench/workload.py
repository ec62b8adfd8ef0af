"""The workload: tenants spread over the partitions and NOOP `task.requested` events."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import FinOpsTags, TaskRequested, TenantConfig
from lapverse_streams.settings import Settings

SOURCE = "/lapverse/bench"
COST_CENTER = "bench"
# Far above any forecast of the run, so no request meets the margin guardrail.
MRR_MICROS = 10**15


@dataclass(frozen=True)
class Record:
    """One record to produce."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def now_ms() -> int:
    """Wall clock in milliseconds."""
    return time.time_ns() // 1_000_000


def pick_tenants(count: int, partitions: int) -> list[str]:
    """Tenant ids that the default partitioner spreads evenly over the partitions."""
    partitioner = DefaultPartitioner()
    every = list(range(partitions))
    per_partition = -(-count // partitions)
    load: Counter[int] = Counter()
    chosen: list[str] = []
    for i in range(100_000):
        name = f"bench-{i}"
        partition = partitioner(name.encode(), every, every)
        if load[partition] < per_partition:
            load[partition] += 1
            chosen.append(name)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"could not spread {count} tenants over {partitions} partitions")


def tenant_record(settings: Settings, tenant_id: str) -> Record:
    """A `tenant.configured` event with an MRR and a rate limit no benchmark can exhaust."""
    tags = FinOpsTags(
        environment=settings.environment,
        tenant_id=tenant_id,
        cost_center=COST_CENTER,
        owner="bench",
        version=settings.version,
    )
    config = TenantConfig(
        tenant_id=tenant_id,
        mrr_micros=MRR_MICROS,
        owner="bench",
        rate_limit_per_s=1_000_000,  # the bench measures throughput, not the rate limit
        burst=1_000_000,
        tags=tags,
    )
    event = envelope(
        "tenant.configured", f"{tenant_id}:config", tenant_id, config, now_ms(), SOURCE
    )
    return Record(tenant_id.encode(), encode(event), [])


# The gateway records and samples new traces only when it has an OTLP endpoint to send them
# to (Settings.recorded_trace_ratio); LAPVERSE_BENCH_SAMPLED=1 sends sampled ones, as with a
# collector and ratio 1.0, so every record is traced through the worker.
SAMPLED = os.environ.get("LAPVERSE_BENCH_SAMPLED", "") == "1"


def trace_headers() -> list[tuple[str, bytes]]:
    """A fresh W3C traceparent header, as the gateway would send (see SAMPLED)."""
    flags = "01" if SAMPLED else "00"
    traceparent = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-{flags}"
    return [("traceparent", traceparent.encode())]


def task_record(tenant_id: str, event_id: str) -> Record:
    """A NOOP `task.requested` event; its id is the idempotency key."""
    request = TaskRequested(
        type="NOOP", tenant=tenant_id, description="benchmark", cost_center=COST_CENTER
    )
    event = envelope("task.requested", event_id, tenant_id, request, now_ms(), SOURCE)
    return Record(tenant_id.encode(), encode(event), trace_headers())


def task_records(count: int, tenants: list[str], id_prefix: str) -> list[Record]:
    """`count` requests with unique ids, round-robin over the tenants."""
    return [task_record(tenants[i % len(tenants)], f"{id_prefix}-{i:08d}") for i in range(count)]


def new_producer(bootstrap: str) -> AIOKafkaProducer:
    """A producer that batches: sends are not awaited one by one."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=10, max_batch_size=256 * 1024
    )


async def produce(
    bootstrap: str, topic: str, records: list[Record], timeout_s: float = 60.0
) -> None:
    """Produce every record, waiting for delivery per chunk of 2000."""
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        async with asyncio.timeout(timeout_s):
            for start in range(0, len(records), 2000):
                futures = [
                    await producer.send(topic, r.value, key=r.key, headers=r.headers)
                    for r in records[start : start + 2000]
                ]
                await asyncio.gather(*futures)
    finally:
        await producer.stop()


class Trickle:
    """Produces fresh requests at a steady rate in the background until stopped."""

    def __init__(self, bootstrap: str, topic: str, tenants: list[str], rate_per_s: int) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._tenants = tenants
        self._rate_per_s = rate_per_s
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    @staticmethod
    def event_id(seq: int) -> str:
        """Idempotency key of the seq-th trickled request."""
        return f"recovery-{seq:08d}"

    @staticmethod
    def seq_of(event_id: str) -> int | None:
        """Inverse of event_id; None for other ids."""
        prefix, _, seq = event_id.rpartition("-")
        return int(seq) if prefix == "recovery" and seq.isdigit() else None

    async def start(self) -> None:
        """Connect and start producing."""
        self._producer = new_producer(self._bootstrap)
        await self._producer.start()
        self._task = asyncio.create_task(self._run(), name="bench-trickle")

    async def _run(self) -> None:
        assert self._producer is not None
        tick_s = 0.05
        per_tick = max(1, round(self._rate_per_s * tick_s))
        while True:
            for _ in range(per_tick):
                tenant = self._tenants[self.sent % len(self._tenants)]
                record = task_record(tenant, self.event_id(self.sent))
                await self._producer.send(
                    self._topic, record.value, key=record.key, headers=record.headers
                )
                self.sent += 1
            await asyncio.sleep(tick_s)

    async def stop(self) -> None:
        """Stop producing and close the producer."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
