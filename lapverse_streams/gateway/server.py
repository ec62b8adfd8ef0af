"""The aiohttp application: middlewares, routes and the lifecycle of its collaborators."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import uvloop
from aiohttp import web
from opentelemetry import trace

from lapverse_streams.clock import now_ms
from lapverse_streams.config_view import ConfigView
from lapverse_streams.gateway.admin import AdminRoutes
from lapverse_streams.gateway.bridge import Bridge
from lapverse_streams.gateway.bulk import BulkRoutes
from lapverse_streams.gateway.champions import ChampionRoutes
from lapverse_streams.gateway.health import WINDOWS_S
from lapverse_streams.gateway.problems import Problem, json_response
from lapverse_streams.gateway.routes import Routes
from lapverse_streams.gateway.self_compete import SelfCompeteRoutes
from lapverse_streams.gateway.status import StatusMonitor, status_report
from lapverse_streams.observability.logging import configure_logging
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.observability.tracing import (
    TRACEPARENT,
    caller_context,
    setup_tracing,
    traceparent,
)
from lapverse_streams.runtime import tune_gc
from lapverse_streams.settings import Settings
from lapverse_streams.variants.base import load_families

log = logging.getLogger(__name__)
tracer = trace.get_tracer("lapverse.gateway")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
CONFIG = web.AppKey("config", ConfigView)
BRIDGE = web.AppKey("bridge", Bridge)
# HTTP methods a metric label may take: a caller's made-up method must not add series
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OPENAPI_PATH = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"
KEPT_HEADERS = ("Allow",)  # an aiohttp error's headers that its problem+json keeps (405)
UNTRACED = frozenset({"/metrics", "/healthz", "/readyz"})  # probes: a trace per scrape is noise


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One server span per request (probes aside), a child of the caller's `traceparent`.

    Every answer, errors included, carries the span's own `traceparent`, so a caller can find
    the request's trace (and keep it going) by its trace id.
    """
    if request.path in UNTRACED:
        return await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource else None
    # A 4xx is the caller's error, not the server's: only a 5xx marks the span as failed.
    with tracer.start_as_current_span(
        f"{request.method} {route}" if route else request.method,
        context=caller_context(request.headers),
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": request.method, "url.path": request.path},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if route:
            span.set_attribute("http.route", route)
        header = traceparent(span)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _answered(span, exc.status)
            if header:
                exc.headers[TRACEPARENT] = header
            raise
        except Exception as exc:  # problems_and_metrics turns errors into problems first
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            raise
        _answered(span, response.status)
        if header and not response.prepared:
            response.headers[TRACEPARENT] = header
        return response


def _answered(span: trace.Span, status: int) -> None:
    """The answer's status on the server span; a 5xx fails it."""
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(trace.StatusCode.ERROR)


@web.middleware
async def problems_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error as problem+json and count every request."""
    started = time.perf_counter()
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except Problem as problem:
        status = problem.status_code
        raise
    except web.HTTPRequestEntityTooLarge:
        status = 413
        raise Problem(
            413, "too-large", f"the body exceeds {request.app[SETTINGS].max_body_bytes} bytes"
        ) from None
    except web.HTTPException as exc:
        status = exc.status
        kept = {name: exc.headers[name] for name in KEPT_HEADERS if name in exc.headers}
        raise Problem(exc.status, "http-error", exc.reason, headers=kept) from None
    except Exception:
        log.exception("unhandled error", extra={"route": route})
        raise Problem(500, "internal", "unexpected error; it has been logged") from None
    finally:
        metrics = request.app[METRICS]
        method = request.method if request.method in KNOWN_METHODS else "OTHER"
        metrics.http_requests.labels(route, method, str(status)).inc()
        metrics.http_duration.labels(route).observe(time.perf_counter() - started)


def create_app(settings: Settings) -> web.Application:
    """Build the gateway application; Kafka clients start in its cleanup context."""
    app = web.Application(
        middlewares=[traced, problems_and_metrics], client_max_size=settings.max_body_bytes
    )
    app[METRICS] = Metrics()
    config = ConfigView(settings)
    bridge = Bridge(settings, app[METRICS], tenants=config.tenants)
    config.dead_letters = bridge.dead_letters  # one dead-letter path for both readers
    app[SETTINGS], app[CONFIG], app[BRIDGE] = settings, config, bridge
    routes = Routes(settings, config, bridge)
    admin = AdminRoutes(settings, config, bridge)
    families = load_families()
    rounds = SelfCompeteRoutes(routes, families)
    champions = ChampionRoutes(settings, config, bridge, families)
    monitor = StatusMonitor(settings, bridge, app[METRICS])

    async def kafka_clients(_: web.Application) -> AsyncIterator[None]:
        await config.start()
        await bridge.start()
        await config.wait_ready(30)
        yield
        await bridge.stop()
        await config.stop()

    async def health_sampler(_: web.Application) -> AsyncIterator[None]:
        sampler = asyncio.create_task(monitor.run(), name="health-sampler")
        yield
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler

    async def metrics_page(request: web.Request) -> web.Response:
        monitor.health(now_ms())  # the health gauges as of this scrape
        return web.Response(
            body=app[METRICS].exposition(), content_type="text/plain", charset="utf-8"
        )

    async def healthz(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if not (config.ready and bridge.connected):
            raise Problem(
                503, "not-ready", "not connected to Kafka yet", headers={"Retry-After": "1"}
            )
        return json_response({"status": "ready"})

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=OPENAPI_PATH.read_text(), content_type="application/yaml")

    async def status(request: web.Request) -> web.Response:
        return json_response(
            admin.visible_status(request, status_report(config, bridge, app[METRICS], monitor))
        )

    async def status_history(request: web.Request) -> web.Response:
        window = request.query.get("window", "1h")
        if window not in WINDOWS_S:
            raise Problem(400, "bad-window", f"window must be one of {', '.join(WINDOWS_S)}")
        return json_response(await monitor.history_report(window))

    app.cleanup_ctx.append(kafka_clients)
    app.cleanup_ctx.append(health_sampler)
    app.router.add_post("/api/v2/tasks", routes.post_task)
    app.router.add_post("/api/v2/tasks:batch", BulkRoutes(routes).post)
    app.router.add_get("/api/v2/tasks/{task_id}", routes.get_task)
    app.router.add_post("/api/v2/self-compete", rounds.post)
    app.router.add_get("/api/v2/self-compete/{competition_id}", rounds.get)
    app.router.add_get("/api/v2/champions", champions.list)
    app.router.add_get("/api/v2/champions/{family}", champions.get)
    app.router.add_get("/api/v2/champions/{family}/history", champions.history)
    app.router.add_put("/admin/v1/tenants/{tenant_id}", admin.put_tenant)
    app.router.add_post("/admin/v1/tenants/{tenant_id}/api-keys", admin.post_api_key)
    app.router.add_get("/admin/v1/tenants/{tenant_id}/api-keys", admin.list_api_keys)
    app.router.add_delete("/admin/v1/tenants/{tenant_id}/api-keys/{key_id}", admin.delete_api_key)
    app.router.add_put("/admin/v1/flags/{flag_key}", admin.put_flag)
    champion_admin = "/admin/v1/tenants/{tenant_id}/champions/{family}"
    app.router.add_post(f"{champion_admin}/pin", champions.pin)
    app.router.add_post(f"{champion_admin}/unpin", champions.unpin)
    app.router.add_post(f"{champion_admin}/rollback", champions.rollback)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/status/history", status_history)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.yaml", openapi)
    return app


def run(settings: Settings) -> None:
    """Serve until interrupted, on uvloop unless LAPVERSE_GATEWAY_UVLOOP=false."""
    loop_factory = uvloop.new_event_loop if settings.gateway_uvloop else None
    tune_gc(settings.gc_threshold_values)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings))


async def serve(settings: Settings) -> None:
    """Run the gateway until cancelled."""
    configure_logging("lapverse-gateway", settings.log_level)
    provider = setup_tracing(
        "lapverse-gateway",
        settings.environment,
        settings.otlp_endpoint or None,
        settings.recorded_trace_ratio,
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port)
    await site.start()
    log.info("gateway listening", extra={"port": settings.gateway_port})
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        provider.shutdown()
