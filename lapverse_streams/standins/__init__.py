"""Local stand-ins of the external services (News AI, Share API) for `make run` and tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from aiohttp import web

from lapverse_streams.standins import news_ai, share_api
from lapverse_streams.standins.control import FAULTS, Faults, local_url, serve

StandInKind = Literal["news-ai", "share-api"]
APP_FACTORIES: dict[StandInKind, Callable[..., web.Application]] = {
    "news-ai": news_ai.create_app,
    "share-api": share_api.create_app,
}
SHUTDOWN_TIMEOUT_S = 1.0


@dataclass
class StandIn:
    """A running stand-in: where it listens and how to stop it."""

    kind: StandInKind
    runner: web.AppRunner
    url: str

    @property
    def port(self) -> int:
        """The bound TCP port."""
        port: int = self.runner.addresses[0][1]
        return port

    @property
    def faults(self) -> Faults:
        """The live faults (the same object `/control` reads and changes)."""
        return self.runner.app[FAULTS]

    async def stop(self) -> None:
        """Stop listening; in-flight requests get SHUTDOWN_TIMEOUT_S to finish."""
        await self.runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def start_standin(
    kind: StandInKind,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api_key: str | None = None,
    latency_ms: float = 0.0,
    failure_rate: float = 0.0,
    seed: int | None = None,
) -> StandIn:
    """Serve the `kind` stand-in on host:port (0 picks a free port) until `stop()`."""
    app = APP_FACTORIES[kind](
        api_key=api_key, latency_ms=latency_ms, failure_rate=failure_rate, seed=seed
    )
    runner = await serve(app, host, port, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    return StandIn(kind, runner, local_url(host, runner.addresses[0][1]))


__all__ = ["StandIn", "StandInKind", "start_standin"]
