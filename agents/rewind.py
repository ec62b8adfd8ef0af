"""Keep Faust from losing records around the seek-back that ends every rebalance.

When a rebalance ends, Faust's recovery resumes the stream partitions, seeks them back to
their committed offsets, and then resumes the flow into the stream queues. Two steps of that
lost records on a restarted worker (the SIGKILL drill in `tests/integration/test_crash.py`
failed about 1 run in 6):

- The flow is already running while the seek is awaited, so records fetched past the new
  position land in the agents' queues, and resuming the flow cleared every queue
  (`FlowControlEvent.resume()`). The records were gone and the consumer had moved past
  them. Here resuming keeps the queues; revoking partitions still clears them, as Faust
  does on its own.
- aiokafka's `seek_to_committed()` leaves a partition without a committed offset where it
  is, so records Faust dropped from a fetch during the rebalance were not read again. Here
  such a partition goes back to its first offset, as `consumer_auto_offset_reset="earliest"`
  says.

A record read twice after either is harmless: every agent is idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.utils.queues import FlowControlEvent


class KeepQueuesOnResume(FlowControlEvent):
    """Flow control whose resume lets queued records through instead of clearing them."""

    def resume(self) -> None:
        """Resume production into the queues; what they hold stays."""
        self._suspend.clear()
        self._resume.set()


async def seek_back(
    consumer: AIOKafkaConsumer, skip_topics: set[str]
) -> Mapping[TopicPartition, int | None]:
    """Seek assigned partitions to their commits; those without one to their beginning.

    Partitions of `skip_topics` (table changelogs, which recovery positions itself) only get
    the plain seek to a commit.
    """
    committed: Mapping[TopicPartition, int | None] = await consumer.seek_to_committed()
    uncommitted = [
        tp for tp, offset in committed.items() if not offset and tp.topic not in skip_topics
    ]
    if uncommitted:
        await consumer.seek_to_beginning(*uncommitted)
    return committed


def keep_records_across_seek_back(app: faust.App) -> None:
    """Install both fixes: on this app's flow control, and on Faust's consumer thread."""
    app.flow_control = KeepQueuesOnResume()
    thread_class: Any = faust_aiokafka.AIOKafkaConsumerThread

    async def seek_to_committed(self: Any) -> Mapping[Any, int | None]:
        changelogs = set(self.app.tables.changelog_topics)
        result: Mapping[Any, int | None] = await self.call_thread(
            seek_back, self._ensure_consumer(), changelogs
        )
        return result

    thread_class.seek_to_committed = seek_to_committed
