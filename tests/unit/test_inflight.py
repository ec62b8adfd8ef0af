"""A batch in flight is acknowledged to Faust only once every one of its writes is delivered."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from faust.types.tuples import ConsumerMessage

from agents import inflight as inflight_module
from agents.inflight import InFlight
from agents.transactions import Produce


@dataclass
class FakeProducer:
    """Each send returns a delivery future the test resolves."""

    deliveries: list[asyncio.Future[None]] = field(default_factory=list)

    async def send(self, *args: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deliveries.append(future)
        return future


@dataclass
class FakeConsumer:
    acked: list[int] = field(default_factory=list)

    def ack(self, message: ConsumerMessage) -> bool:
        self.acked.append(message.offset)
        return True


@dataclass
class FakeSensors:
    out: list[int] = field(default_factory=list)

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        self.out.append(offset)


@dataclass
class FakeApp:
    producer: FakeProducer = field(default_factory=FakeProducer)
    consumer: FakeConsumer = field(default_factory=FakeConsumer)
    sensors: FakeSensors = field(default_factory=FakeSensors)


@dataclass
class Event:
    message: ConsumerMessage


def events(*offsets: int) -> list[Event]:
    """Events as `take_events` hands them over: one reference each, the stream's."""
    out = []
    for offset in offsets:
        message = ConsumerMessage("tasks", 0, offset, 0.0, 0, [], b"k", b"v", None)
        message.incref()
        out.append(Event(message))
    return out


def take_events_acks(batch: list[Event], consumer: FakeConsumer) -> None:
    """What `take_events` does once the agent's body returns: drop its reference."""
    for event in batch:
        event.message.ack(consumer)


RECORD = Produce("decisions", b"k", b"v", [])


def test_a_batch_is_acknowledged_only_after_all_its_writes_are_delivered() -> None:
    async def scenario() -> None:
        app = FakeApp()
        inflight = InFlight(app, "governor", depth=4)
        batch = events(10, 11)
        await inflight.send(batch, [RECORD, RECORD])
        take_events_acks(batch, app.consumer)
        await asyncio.sleep(0)
        assert app.consumer.acked == []  # take_events' ack is not the last one

        app.producer.deliveries[0].set_result(None)
        await asyncio.sleep(0)
        assert app.consumer.acked == []  # one write of two is still on its way

        app.producer.deliveries[1].set_result(None)
        await inflight.drain()
        assert app.consumer.acked == [10, 11]
        assert app.sensors.out == [10, 11]
        assert not inflight.failed

    asyncio.run(scenario())


def test_a_failed_write_acknowledges_nothing_and_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stopped: list[tuple[str, BaseException]] = []

    async def stop(app: Any, agent: str, exc: BaseException) -> None:
        stopped.append((agent, exc))

    monkeypatch.setattr(inflight_module, "stop_after_failed_write", stop)

    async def scenario() -> None:
        app = FakeApp()
        inflight = InFlight(app, "governor", depth=4)
        batch = events(5)
        await inflight.send(batch, [RECORD])
        take_events_acks(batch, app.consumer)
        app.producer.deliveries[0].set_exception(OSError("broker gone"))
        await inflight.drain()
        assert app.consumer.acked == []  # read again by the restart or the next owner
        assert [agent for agent, _ in stopped] == ["governor"]
        assert inflight.failed  # the governor decides no further batch

    asyncio.run(scenario())


def test_no_more_than_depth_batches_are_in_flight() -> None:
    async def scenario() -> None:
        app = FakeApp()
        inflight = InFlight(app, "governor", depth=1)
        await inflight.send(events(1), [RECORD])
        second = asyncio.ensure_future(inflight.send(events(2), [RECORD]))
        await asyncio.sleep(0.01)
        assert not second.done()  # waits for the first batch's delivery
        app.producer.deliveries[0].set_result(None)
        await asyncio.wait_for(second, 1)
        app.producer.deliveries[1].set_result(None)
        await inflight.drain()

    asyncio.run(scenario())
