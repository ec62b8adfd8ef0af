"""Resuming a worker's flow keeps what its agents' queues hold."""

from __future__ import annotations

from mode.utils.queues import FlowControlEvent, FlowControlQueue

from agents.app import create_worker
from agents.rewind import KeepQueuesOnResume
from lapverse_streams.settings import Settings


async def test_resume_keeps_queued_records_where_fausts_own_flow_control_drops_them() -> None:
    for flow, kept in ((FlowControlEvent(), 0), (KeepQueuesOnResume(), 1)):
        queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
        queue.put_nowait("record fetched while the seek-back was awaited")
        flow.resume()
        assert queue.qsize() == kept


def test_the_worker_uses_it_for_every_agent_queue() -> None:
    app = create_worker(Settings()).app
    assert isinstance(app.flow_control, KeepQueuesOnResume)
    queue = app.topic("anything").queue
    assert queue in app.flow_control._queues
