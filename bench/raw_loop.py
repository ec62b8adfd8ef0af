"""Baseline: a plain aiokafka consume, decide, produce loop (`python -m bench.raw_loop`).

It does the least work equivalent to admission: parse each request, build a small decision,
serialize it, produce it without awaiting each send, and commit after every fetched batch.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

DECISION_TYPE = "io.lapverse.task.accepted.v1"


def decide(value: bytes, now_ms: int) -> bytes:
    """A minimal decision for one `task.requested` event."""
    event = orjson.loads(value)
    data = event["data"]
    decision = {
        "type": DECISION_TYPE,
        "id": f"{event['id']}:decision",
        "subject": event["subject"],
        "data": {
            "idempotencyKey": event["id"],
            "status": "accepted",
            "taskType": data["type"],
            "decidedAtMs": now_ms,
        },
    }
    return orjson.dumps(decision)


# What one input record makes a loop write: (topic, value) pairs, from its topic, its value
# and the batch's time in milliseconds.
Outputs = Callable[[str, bytes, int], list[tuple[str, bytes]]]


async def consume_and_produce(
    bootstrap: str, sources: list[str], group: str, batch_max: int, outputs: Outputs
) -> None:
    """Read `sources` in a group and write each record's outputs, until SIGTERM or SIGINT.

    Sends are not awaited one by one: their deliveries are gathered per fetched batch, then
    the batch's offsets are committed. Each output keeps its input's key and headers.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    consumer = AIOKafkaConsumer(
        *sources,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    await consumer.start()
    try:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=batch_max)
            now_ms = time.time_ns() // 1_000_000
            futures = [
                await producer.send(sink, value, key=r.key, headers=list(r.headers))
                for tp, records in batches.items()
                for r in records
                for sink, value in outputs(tp.topic, r.value or b"{}", now_ms)
            ]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    """Parse arguments and run the loop."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--batch-max", type=int, default=500)
    args = parser.parse_args()
    sink = args.sink
    asyncio.run(
        consume_and_produce(
            args.bootstrap,
            [args.source],
            args.group,
            args.batch_max,
            lambda _topic, value, now_ms: [(sink, decide(value, now_ms))],
        )
    )


if __name__ == "__main__":
    main()
