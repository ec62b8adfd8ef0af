"""At least once without a round trip per batch: a batch is acknowledged once its writes land.

`produce_all` hands a batch's changelog writes and outputs to the producer and awaits every
delivery before the agent takes its next batch, so the agent sat idle for a produce round
trip (acks=all) after every batch. Here the agent goes on to decide the next batch while the
last one's writes are on their way, and each batch's records are acknowledged to Faust only
once all of its writes are delivered:

- Each record's Faust message gets one more reference before the batch is handed over.
  `take_events` drops its own reference when the body returns; ours is dropped, the final
  acknowledgement, when the deliveries are in. Faust commits an offset only when every
  record up to it is acknowledged, so no offset is committed ahead of its writes.
- The producer keeps each partition's records in the order they were sent, so a later
  batch's write of a key never lands before an earlier batch's.
- A failed delivery stops the worker (its tables are ahead of the log) and its records are
  never acknowledged: they are read again by the restarted worker or the next owner. The
  agent decides no further batch once `failed` is set.
- At most `depth` batches are in flight; the agent waits for the oldest beyond that.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any

from agents.transactions import Produce, hand_over, stop_after_failed_write


class InFlight:
    """The batches of one agent whose writes are on their way to the broker."""

    def __init__(self, app: Any, agent: str, depth: int) -> None:
        self.app = app
        self.agent = agent
        self.depth = depth
        self._batches: deque[asyncio.Future[None]] = deque()
        self.failed = False  # a delivery failed: the worker is stopping

    async def send(self, events: Sequence[Any], records: Sequence[Produce]) -> None:
        """Send the batch's records; acknowledge `events` once every record is delivered."""
        for event in events:
            event.message.incref()  # ours: released only by the final acknowledgement
        deliveries = await hand_over(self.app, records)
        self._batches.append(asyncio.ensure_future(self._settle(events, deliveries)))
        while self._batches and (len(self._batches) > self.depth or self._batches[0].done()):
            await self._batches.popleft()

    async def drain(self) -> None:
        """Wait until every batch sent so far is delivered and acknowledged."""
        while self._batches:
            await self._batches.popleft()

    async def _settle(self, events: Sequence[Any], deliveries: list[Awaitable[Any]]) -> None:
        try:
            await asyncio.gather(*deliveries)
        except Exception as exc:  # not on the broker: the tables are ahead of the log
            self.failed = True
            await stop_after_failed_write(self.app, self.agent, exc)
            return
        consumer, sensors = self.app.consumer, self.app.sensors
        for event in events:
            message = event.message
            if message.ack(consumer):  # the final reference: the offset may be committed
                sensors.on_message_out(message.tp, message.offset, message)
