"""Heartbeat: each worker publishes its breakers, consumer lag and table sizes for /api/status."""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any

import faust

from lapverse_streams.clock import now_ms
from lapverse_streams.events.codec import encode_event
from lapverse_streams.events.models import WorkerStatus

if TYPE_CHECKING:
    from agents.app import Worker

log = logging.getLogger(__name__)


def register(worker: Worker, status_topic: faust.TopicT) -> None:
    """Every few seconds: update the lag and table gauges and publish worker.status."""
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def consumer_lag() -> dict[str, int]:
        consumer: Any = worker.app.consumer
        lag: dict[str, int] = {}
        for tp in consumer.assignment() if consumer else ():
            # Only what the consumer already knows: asking the client for positions here
            # (position()) would race Faust's own seeks during recovery.
            read = consumer._read_offset.get(tp)
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # not fetched yet, or mid-rebalance: report it next time
                continue
            if read is None or highwater is None:
                continue
            behind = max(0, highwater - read - 1)
            worker.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(behind)
            lag[tp.topic] = lag.get(tp.topic, 0) + behind
        return lag

    @worker.app.timer(worker.settings.heartbeat_interval_ms / 1000)  # type: ignore[untyped-decorator]
    async def publish_status() -> None:
        """Publish this worker's heartbeat to the compacted status topic."""
        tables = {name: len(table.data) for name, table in worker.tables.items()}
        for name, keys in tables.items():
            worker.metrics.table_keys.labels(name).set(keys)
        consumer: Any = worker.app.consumer
        status = WorkerStatus(
            worker_id=worker_id,
            breakers=worker.services.breaker_states(),
            consumer_lag=consumer_lag(),
            table_keys=tables,
            assigned_partitions=len(consumer.assignment()) if consumer else 0,
            updated_at_ms=now_ms(),
        )
        event = encode_event(
            "worker.status",
            f"{worker_id}:{status.updated_at_ms}",
            worker_id,
            status,
            status.updated_at_ms,
            "/lapverse/worker",
        )
        await status_topic.send(key=worker_id.encode(), value=event, force=True)
