"""Baseline: a plain aiokafka consume, decide, produce loop (`python -m bench.raw_loop`).

It does the least work equivalent to admission: parse each request, build a small decision,
serialize it, produce it without awaiting each send, and commit after every fetched batch.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

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


async def run(bootstrap: str, source: str, sink: str, group: str, batch_max: int) -> None:
    """Loop until SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    consumer = AIOKafkaConsumer(
        source,
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
                await producer.send(
                    sink, decide(r.value or b"{}", now_ms), key=r.key, headers=list(r.headers)
                )
                for records in batches.values()
                for r in records
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
    asyncio.run(run(args.bootstrap, args.source, args.sink, args.group, args.batch_max))


if __name__ == "__main__":
    main()
