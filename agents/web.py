"""The worker's HTTP surface: /metrics, /healthz and /readyz, and none of Faust's own pages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import faust
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faust.web.base import BlueprintManager

from lapverse_streams.events import topics

if TYPE_CHECKING:
    from agents.app import Worker

PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
# Faust's built-in pages serve table contents, routing and internals: none is turned on.
FAUST_PAGE_SETTINGS = (
    "web_tables_enabled",
    "web_router_enabled",
    "web_stats_enabled",
    "web_graph_enabled",
    "web_metrics_enabled",
)


class BrokerProbe:
    """Remembers when the broker last answered a metadata request."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        timeout_s: float = 2.0,
        fresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._timeout_s = timeout_s
        self._fresh_s = fresh_s
        self._clock = clock
        self._admin: Any = None
        self._answered_at: float | None = None

    @property
    def reachable(self) -> bool:
        """Whether the broker answered within the last `fresh_s` seconds."""
        answered_at = self._answered_at
        return answered_at is not None and self._clock() - answered_at <= self._fresh_s

    async def check(self) -> bool:
        """Ask the broker for one topic's metadata; remember when it answered."""
        try:
            if self._admin is None:
                self._admin = AIOKafkaAdminClient(
                    bootstrap_servers=self._bootstrap_servers,
                    request_timeout_ms=int(self._timeout_s * 1000),
                )
                await asyncio.wait_for(self._admin.start(), self._timeout_s)
            await asyncio.wait_for(self._admin.describe_topics([self._topic]), self._timeout_s)
        except (KafkaError, OSError, TimeoutError):
            await self.close()
            return False
        self._answered_at = self._clock()
        return True

    async def close(self) -> None:
        """Close the probe's connection; the next check opens a new one."""
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()


def register(worker: Worker, probe_interval_s: float = 1.0) -> BrokerProbe:
    """Bind the worker's web server to its host and serve only `PATHS` there."""
    app = worker.app
    settings = worker.settings
    # Faust binds `web_bind` (default 0.0.0.0); `web_host` only names the worker in URLs.
    app.conf.web_bind = settings.worker_web_host
    for name in FAUST_PAGE_SETTINGS:
        setattr(app.conf, name, False)
    # The production index at "/" has no setting: start from no blueprint at all.
    app.web.blueprints = BlueprintManager()
    probe = BrokerProbe(settings.bootstrap_servers, settings.topic(topics.WORKER_STATUS))

    class BrokerProbeOwner(faust.Service):
        """Runs the broker probe on a timer and closes it with the worker."""

        @faust.Service.task
        async def _check_broker(self) -> None:
            while not self.should_stop:
                await probe.check()
                await self.sleep(probe_interval_s)

        async def on_stop(self) -> None:
            await probe.close()

    app.service(BrokerProbeOwner)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        worker.metrics.broker_connected.set(1 if probe.reachable else 0)
        return web.bytes(worker.metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def health_page(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "ready": worker.config.ready})

    @app.page("/readyz")
    async def ready_page(web: Any, request: Any) -> Any:
        assigned = bool(app.consumer.assignment()) if app.consumer else False
        broker = probe.reachable
        ready = worker.config.ready and assigned and not app.rebalancing and broker
        return web.json({"ready": ready, "broker": broker}, status=200 if ready else 503)

    return probe
