"""How long Faust's consumer lets a fetch wait for data: ours, not Faust's hard-coded 1.5 s.

Faust builds its worker consumer with `fetch_max_wait_ms=1500`. Apache Kafka answers a
waiting fetch as soon as data arrives, but a fetch with nothing to return still waits it
out: table recovery and the seek-back after a rebalance each ended on such a fetch, so a
restarted worker took about 4.5 s from its assignment to its first decision. Tansu never
answers early, so every hop there cost the full wait.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


def use_fetch_max_wait(wait_ms: int) -> None:
    """Make Faust's worker consumer wait at most `wait_ms` for a fetch (idempotent)."""
    thread_class: Any = faust_aiokafka.AIOKafkaConsumerThread
    create = getattr(thread_class, "_lapverse_create_worker_consumer", None)
    if create is None:
        create = thread_class._create_worker_consumer
        thread_class._lapverse_create_worker_consumer = create

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = wait_ms  # read by the fetcher aiokafka makes at start()
        return consumer

    thread_class._create_worker_consumer = _create_worker_consumer
