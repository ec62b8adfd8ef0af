"""Routes of tasks: POST a task and answer with its admission decision, GET its state."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry import trace

from lapverse_streams.clock import now_ms
from lapverse_streams.config_view import ConfigView
from lapverse_streams.domain import idempotency
from lapverse_streams.domain.batch import REQUEST_ID
from lapverse_streams.domain.pricing import task_estimate_micros, usd
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode_event
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
        task = self.parse_task(body, tenant.tenant_id)
        task_id = idempotency.task_id(tenant.tenant_id, key)
        requested = TaskRequested(**task.model_dump(), tags=self.tags(tenant, task.cost_center))
        reply = await self.submit(
            topics.TASKS, "task.requested", key, tenant.tenant_id, task_id, requested
        )
        location = task_location(task_id)
        if reply is None:
            return pending_task(task_id, requested).response()
        return render_decision(reply, location)

    def parse_task(self, body: Any, tenant_id: str) -> TaskRequest:
        """A task request of this tenant with a known type, or the 400/403 problem."""
        if isinstance(body, dict):
            body.setdefault("tenant", tenant_id)
        task = parse_body(TaskRequest, body)
        if task.tenant != tenant_id:
            raise Problem(403, "wrong-tenant", "body.tenant does not match the API key's tenant")
        if task.type not in self.task_types:
            known = ", ".join(self.task_types)
            detail = f"type: no handler for task type {task.type!r}; known types: {known}"
            raise Problem(
                400, "unknown-task-type", detail, fields=["type"], knownTypes=list(self.task_types)
            )
        return task

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
        if not self.claim(request_id):
            raise in_progress()
        try:
            with tracer.start_as_current_span(
                f"submit {short}",
                kind=trace.SpanKind.PRODUCER,
                attributes={"lapverse.request_id": request_id, "lapverse.tenant": tenant_id},
            ):
                reply_id = uuid.uuid4().hex
                event = encode_event(short, key, tenant_id, data, now_ms(), SOURCE)
                headers = inject_headers([(REQUEST_ID, reply_id.encode())])
                try:
                    return await self.bridge.submit(
                        topic, tenant_id.encode(), event, headers, reply_id
                    )
                except BrokerUnavailable as exc:
                    raise broker_unavailable(exc) from exc
        finally:
            self.release((request_id,))

    def claim(self, request_id: str) -> bool:
        """Mark a request id as being decided; False when it already is (a 409)."""
        if request_id in self._in_flight:
            return False
        self._in_flight.add(request_id)
        return True

    def release(self, request_ids: Iterable[str]) -> None:
        """Forget request ids once their answers are known."""
        self._in_flight.difference_update(request_ids)

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


@dataclass(frozen=True)
class Answer:
    """A POST's answer before it is HTTP: status, headers and JSON body."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    def response(self) -> web.Response:
        """The answer as an application/json response."""
        return json_response(self.body, self.status, self.headers)


def task_location(task_id: str) -> str:
    """Where to GET a task."""
    return f"/api/v2/tasks/{task_id}"


def in_progress() -> Problem:
    """409: the same Idempotency-Key is still being decided."""
    return Problem(
        409, "request-in-progress", "a request with this Idempotency-Key is still being decided"
    )


def broker_unavailable(exc: BaseException) -> Problem:
    """503: the request could not be written to Kafka, so nothing was accepted."""
    detail = f"the request was not accepted: {str(exc) or type(exc).__name__}"
    return Problem(503, "broker-unavailable", detail, headers={"Retry-After": "5"})


def pending_task(task_id: str, requested: TaskRequested) -> Answer:
    """202 `pending`: the task is on Kafka but its decision did not arrive in time."""
    body = {
        "taskId": task_id,
        "status": "pending",
        "costEstimate": usd(task_estimate_micros(requested.requirements.complexity)),
        "tags": requested.tags.model_dump(by_alias=True) if requested.tags else None,
    }
    return Answer(202, {"Location": task_location(task_id)}, body)


def render_decision(reply: Reply, location: str) -> web.Response:
    """The HTTP answer of a task's decision; replays add Idempotent-Replayed."""
    return task_answer(reply, location).response()


def task_answer(reply: Reply, location: str) -> Answer:
    """202 for an accepted task, else raises the rejection's Problem."""
    data = reply.data
    accepted = {
        "taskId": data["taskId"],
        "status": "accepted",
        "costEstimate": usd(data["costEstimateMicros"]),
        "tags": data["tags"],
    }
    return decision_answer(reply, location, accepted, taskId=data["taskId"])


def decision_response(
    reply: Reply, location: str, accepted: dict[str, Any], **ids: str
) -> web.Response:
    """202 with `accepted` for an accepted request, else the rejection as problem+json."""
    return decision_answer(reply, location, accepted, **ids).response()


def decision_answer(reply: Reply, location: str, accepted: dict[str, Any], **ids: str) -> Answer:
    """202 with `accepted` for an accepted request, else raises the rejection's Problem."""
    data = reply.data
    headers = {"Location": location}
    if reply.replayed:
        headers["Idempotent-Replayed"] = "true"
    if data["status"] == "accepted":
        return Answer(202, headers, accepted)
    if data.get("retryAfterS") is not None:
        headers["Retry-After"] = str(data["retryAfterS"])
    headers.update(decision_headers(data))
    raise Problem(
        data["httpStatus"], data["reason"].replace("_", "-"), data["detail"], headers=headers, **ids
    )
