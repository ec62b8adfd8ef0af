"""Routes of tasks: POST a task and answer with its admission decision, GET its state."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from opentelemetry import trace

from lapverse_streams.clock import now_ms
from lapverse_streams.config_view import ConfigView
from lapverse_streams.domain import idempotency
from lapverse_streams.domain.pricing import task_estimate_micros, usd
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import (
    FinOpsTags,
    Model,
    TaskRequest,
    TaskRequested,
    TenantConfig,
)
from lapverse_streams.gateway.auth import authenticate_tenant
from lapverse_streams.gateway.bridge import Bridge, BrokerUnavailable, Reply
from lapverse_streams.gateway.inputs import json_limits, known_task_types, parse_body, read_json
from lapverse_streams.gateway.problems import Problem, json_response
from lapverse_streams.gateway.rate_limits import decision_headers, tenant_policy, with_policy
from lapverse_streams.observability.tracing import inject_headers
from lapverse_streams.settings import Settings

SOURCE = "/lapverse/gateway"
tracer = trace.get_tracer("lapverse.gateway")


class Routes:
    """Handlers bound to the gateway's collaborators."""

    def __init__(self, settings: Settings, config: ConfigView, bridge: Bridge) -> None:
        self.settings = settings
        self.config = config
        self.bridge = bridge
        self.limits = json_limits(settings)
        self.task_types = known_task_types(settings)
        self._in_flight: set[str] = set()

    def tags(self, tenant: TenantConfig, cost_center: str) -> FinOpsTags:
        """FinOps tags for a request of this tenant."""
        return FinOpsTags(
            environment=self.settings.environment,
            tenant_id=tenant.tenant_id,
            cost_center=cost_center,
            owner=tenant.owner,
            version=self.settings.version,
        )

    async def post_task(self, request: web.Request) -> web.Response:
        """POST /api/v2/tasks: write task.requested and answer with the admission decision."""
        tenant = authenticate_tenant(request, self.config)
        return await with_policy(self._post_task(request, tenant), self.policy(tenant))

    def policy(self, tenant: TenantConfig) -> str:
        """The tenant's RateLimit-Policy header value."""
        return tenant_policy(tenant, self.settings)

    async def _post_task(self, request: web.Request, tenant: TenantConfig) -> web.Response:
        key = self.request_key(request)
        body = await read_json(request, self.limits)
        if isinstance(body, dict):
            body.setdefault("tenant", tenant.tenant_id)
        task = parse_body(TaskRequest, body)
        if task.tenant != tenant.tenant_id:
            raise Problem(403, "wrong-tenant", "body.tenant does not match the API key's tenant")
        if task.type not in self.task_types:
            known = ", ".join(self.task_types)
            detail = f"type: no handler for task type {task.type!r}; known types: {known}"
            raise Problem(
                400, "unknown-task-type", detail, fields=["type"], knownTypes=list(self.task_types)
            )
        task_id = idempotency.task_id(tenant.tenant_id, key)
        requested = TaskRequested(**task.model_dump(), tags=self.tags(tenant, task.cost_center))
        reply = await self.submit(
            topics.TASKS, "task.requested", key, tenant.tenant_id, task_id, requested
        )
        location = f"/api/v2/tasks/{task_id}"
        if reply is None:
            estimate = usd(task_estimate_micros(task.requirements.complexity))
            body_out = {
                "taskId": task_id,
                "status": "pending",
                "costEstimate": estimate,
                "tags": requested.tags.model_dump(by_alias=True) if requested.tags else None,
            }
            return json_response(body_out, 202, {"Location": location})
        return render_decision(reply, location)

    def request_key(self, request: web.Request) -> str:
        """The request's Idempotency-Key, or 400 saying what is wrong with it."""
        key = request.headers.get("Idempotency-Key")
        problem = idempotency.key_problem(key)
        if problem or key is None:
            raise Problem(400, "idempotency-key", problem or "Idempotency-Key is required")
        return key

    async def submit(
        self, topic: str, short: str, key: str, tenant_id: str, request_id: str, data: Model
    ) -> Reply | None:
        """Write a request event and await its decision; 409 while the same key is deciding."""
        if request_id in self._in_flight:
            raise Problem(
                409,
                "request-in-progress",
                "a request with this Idempotency-Key is still being decided",
            )
        self._in_flight.add(request_id)
        try:
            with tracer.start_as_current_span(
                f"submit {short}",
                kind=trace.SpanKind.PRODUCER,
                attributes={"lapverse.request_id": request_id, "lapverse.tenant": tenant_id},
            ):
                event = envelope(short, key, tenant_id, data, now_ms(), SOURCE)
                reply_id = uuid.uuid4().hex
                headers = inject_headers([("lapverse-request-id", reply_id.encode())])
                try:
                    return await self.bridge.submit(
                        topic, tenant_id.encode(), encode(event), headers, reply_id
                    )
                except BrokerUnavailable as exc:
                    raise Problem(
                        503,
                        "broker-unavailable",
                        f"the request was not accepted: {exc}",
                        headers={"Retry-After": "5"},
                    ) from exc
        finally:
            self._in_flight.discard(request_id)

    async def get_task(self, request: web.Request) -> web.Response:
        """GET /api/v2/tasks/{id}: the task as the gateway's view knows it."""
        tenant = authenticate_tenant(request, self.config)
        state = self.bridge.tasks.get(request.match_info["task_id"])
        if state is None or state.tenant != tenant.tenant_id:
            raise Problem(404, "not-found", "no such task for this tenant")
        decision, result = state.decision, state.result
        return json_response(
            {
                "taskId": decision["taskId"],
                "status": state.status,
                "reason": decision["reason"],
                "costEstimate": usd(decision["costEstimateMicros"]),
                "cost": usd(result["costMicros"]) if result else None,
                "result": result.get("result") if result else None,
                "error": result.get("error") if result else None,
                "durationMs": result["durationMs"] if result else None,
                "tags": decision["tags"],
            }
        )


def render_decision(reply: Reply, location: str) -> web.Response:
    """The HTTP answer of a task's decision; replays add Idempotent-Replayed."""
    data = reply.data
    accepted = {
        "taskId": data["taskId"],
        "status": "accepted",
        "costEstimate": usd(data["costEstimateMicros"]),
        "tags": data["tags"],
    }
    return decision_response(reply, location, accepted, taskId=data["taskId"])


def decision_response(
    reply: Reply, location: str, accepted: dict[str, Any], **ids: str
) -> web.Response:
    """202 with `accepted` for an accepted request, else the rejection as problem+json."""
    data = reply.data
    headers = {"Location": location}
    if reply.replayed:
        headers["Idempotent-Replayed"] = "true"
    if data["status"] == "accepted":
        return json_response(accepted, 202, headers)
    if data.get("retryAfterS") is not None:
        headers["Retry-After"] = str(data["retryAfterS"])
    headers.update(decision_headers(data))
    raise Problem(
        data["httpStatus"], data["reason"].replace("_", "-"), data["detail"], headers=headers, **ids
    )
