"""What every stand-in shares: latency and failures settable at run time, and bearer auth."""

from __future__ import annotations

import asyncio
import hmac
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# the control surface itself stays fast, reliable and open
UNFAULTED_PATHS = frozenset({"/control", "/healthz"})


@dataclass
class Faults:
    """Latency and failure rate applied to every service request, and what happened so far."""

    latency_ms: float = 0.0
    failure_rate: float = 0.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    requests: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        self.update({"latencyMs": self.latency_ms, "failureRate": self.failure_rate})

    def update(self, changes: dict[str, Any]) -> None:
        """Apply `{"latencyMs"?, "failureRate"?}`; ValueError names what is wrong."""
        unknown = set(changes) - {"latencyMs", "failureRate"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; use latencyMs and failureRate")
        latency_ms = changes.get("latencyMs", self.latency_ms)
        failure_rate = changes.get("failureRate", self.failure_rate)
        if not _is_number(latency_ms) or latency_ms < 0:
            raise ValueError("latencyMs must be a number >= 0")
        if not _is_number(failure_rate) or not 0 <= failure_rate <= 1:
            raise ValueError("failureRate must be a number between 0 and 1")
        self.latency_ms, self.failure_rate = float(latency_ms), float(failure_rate)

    def snapshot(self) -> dict[str, Any]:
        """The body of `GET /control`."""
        return {
            "latencyMs": self.latency_ms,
            "failureRate": self.failure_rate,
            "requests": self.requests,
            "failures": self.failures,
        }

    def should_fail(self) -> bool:
        """Draw whether this request fails."""
        return self.failure_rate > 0 and self.rng.random() < self.failure_rate


FAULTS = web.AppKey("faults", Faults)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def error(status: int, message: str) -> web.Response:
    """A JSON error body."""
    return web.json_response({"error": message}, status=status)


def faults_middleware(faults: Faults, api_key: str | None) -> Middleware:
    """Count, delay, maybe fail (503), then check `Authorization: Bearer <api_key>`."""
    expected = f"Bearer {api_key}".encode() if api_key else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNFAULTED_PATHS:
            return await handler(request)
        faults.requests += 1
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.should_fail():
            faults.failures += 1
            return error(503, "injected failure")
        given = request.headers.get("Authorization", "").encode()
        if expected is not None and not hmac.compare_digest(given, expected):
            return error(401, "missing or wrong bearer key")
        return await handler(request)

    return middleware


def add_control_routes(app: web.Application, faults: Faults) -> None:
    """`GET/PUT /control` and `GET /healthz`; `app[FAULTS]` is `faults`."""
    app[FAULTS] = faults

    async def get_control(_: web.Request) -> web.Response:
        return web.json_response(faults.snapshot())

    async def put_control(request: web.Request) -> web.Response:
        changes = await read_json_object(request)
        if isinstance(changes, web.Response):
            return changes
        try:
            faults.update(changes)
        except ValueError as exc:
            return error(400, str(exc))
        return web.json_response(faults.snapshot())

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/control", get_control)
    app.router.add_put("/control", put_control)
    app.router.add_get("/healthz", healthz)


async def read_json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or a 400 response saying why not."""
    try:
        body = await request.json()
    except ValueError:
        return error(400, "the body must be JSON")
    if not isinstance(body, dict):
        return error(400, "the body must be a JSON object")
    return body


def service_app(
    path: str,
    handler: Handler,
    *,
    api_key: str | None,
    latency_ms: float,
    failure_rate: float,
    seed: int | None,
) -> web.Application:
    """A one-route service stand-in (`POST path`), faults settable at run time via `/control`."""
    faults = Faults(latency_ms, failure_rate, random.Random(seed))
    app = web.Application(middlewares=[faults_middleware(faults, api_key)])
    app.router.add_post(path, handler)
    add_control_routes(app, faults)
    return app


async def serve(app: web.Application, host: str, port: int, **options: Any) -> web.AppRunner:
    """Listen on host:port (0: a free port) until the runner is cleaned up.

    `options` go to the runner; a request the client gave up on stops sleeping its latency.
    """
    runner = web.AppRunner(app, handler_cancellation=True, **options)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def local_url(host: str, port: int) -> str:
    """`http://host:port`, with a wildcard host answered on 127.0.0.1."""
    return f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"
