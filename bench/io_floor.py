"""The admission path's reads and writes with no logic (`python -m bench.io_floor`).

The raw loop reads one record and writes one. Admitting and running a task, in one process,
reads three and writes five, on the worker's own topics:

- the request: write the decision and the dedup table's changelog record;
- the decision (the executor): write `task.started` and the result;
- the result (the charge): write the ledger's and the dedup table's changelog records.

This loop does exactly that and nothing else: each input is parsed with orjson and each
output is a small serialized dict, as in the raw loop; nothing is validated, decided, stored
or traced. Produced without awaiting each send, delivery gathered and offsets committed per
fetched batch. Its rate over the raw loop's is the highest admission ratio this pipeline's
shape allows in one Python process on this machine, whatever the implementation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bench.raw_loop import consume_and_produce, decide
from lapverse_streams.events import topics as names

STARTED_TYPE = "io.lapverse.task.started.v1"
COMPLETED_TYPE = "io.lapverse.task.completed.v1"


def small(kind: str, event: dict[str, Any], now_ms: int) -> bytes:
    """A small output record derived from an input event."""
    return orjson.dumps({"type": kind, "id": f"{event['id']}:{kind}", "atMs": now_ms})


class Topics:
    """The worker's topics under one prefix, and two changelogs in place of its tables'."""

    def __init__(self, prefix: str) -> None:
        self.tasks = prefix + names.TASKS
        self.decisions = prefix + names.TASK_DECISIONS
        self.progress = prefix + names.TASK_PROGRESS
        self.results = prefix + names.TASK_RESULTS
        self.dedup = f"{prefix}io-floor-dedup-changelog"
        self.ledger = f"{prefix}io-floor-ledger-changelog"


def outputs(topics: Topics, topic: str, value: bytes, now_ms: int) -> list[tuple[str, bytes]]:
    """What one input record makes the pipeline write, as (topic, value) pairs."""
    if topic == topics.tasks:
        decision = decide(value, now_ms)  # the raw loop's own work, then the dedup record
        dedup = orjson.dumps({"status": "accepted", "atMs": now_ms})
        return [(topics.decisions, decision), (topics.dedup, dedup)]
    event = orjson.loads(value)
    if topic == topics.decisions:
        result = orjson.dumps({"type": COMPLETED_TYPE, "id": f"{event['id']}:result"})
        return [(topics.progress, small(STARTED_TYPE, event, now_ms)), (topics.results, result)]
    return [
        (topics.ledger, small("ledger", event, now_ms)),
        (topics.dedup, small("dedup", event, now_ms)),
    ]


async def create_changelogs(bootstrap: str, topics: Topics, partitions: int) -> None:
    """The two changelog topics the worker's Faust tables would have created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in (topics.dedup, topics.ledger):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def run(bootstrap: str, prefix: str, group: str, batch_max: int, partitions: int) -> None:
    """Loop until SIGTERM or SIGINT."""
    topics = Topics(prefix)
    await create_changelogs(bootstrap, topics, partitions)
    sources = [topics.tasks, topics.decisions, topics.results]

    def outputs_of(topic: str, value: bytes, now_ms: int) -> list[tuple[str, bytes]]:
        return outputs(topics, topic, value, now_ms)

    await consume_and_produce(bootstrap, sources, group, batch_max, outputs_of)


def main() -> None:
    """Parse arguments and run the loop."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument(
        "--prefix", required=True, help="the topics' prefix (LAPVERSE_TOPIC_PREFIX)"
    )
    parser.add_argument("--group", required=True)
    parser.add_argument("--batch-max", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=8, help="of the changelog topics")
    args = parser.parse_args()
    asyncio.run(run(args.bootstrap, args.prefix, args.group, args.batch_max, args.partitions))


if __name__ == "__main__":
    main()
