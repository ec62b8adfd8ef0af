"""Route handlers of the public and admin APIs."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import orjson
from aiohttp import web
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lapverse_streams.clock import now_ms
from lapverse_streams.config_view import ConfigView, hash_api_key
from lapverse_streams.domain import flags, idempotency
from lapverse_streams.domain.pricing import task_estimate_micros, usd, usd_to_micros
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import (
    FinOpsTags,
    FlagConfig,
    Model,
    TaskRequest,
    TaskRequested,
    TenantConfig,
)
from lapverse_streams.gateway.auth import authenticate_admin, authenticate_tenant, new_api_key
from lapverse_streams.gateway.bridge import Bridge, BrokerUnavailable, Reply
from lapverse_streams.gateway.problems import Problem, json_response
from lapverse_streams.observability.tracing import inject_headers
from lapverse_streams.settings import Settings

SOURCE = "/lapverse/gateway"
M = TypeVar("M", bound=BaseModel)
MAX_FLAG_KEY_LEN = 200
tracer = trace.get_tracer("lapverse.gateway")


class Routes:
    """Handlers bound to the gateway's collaborators."""

    def __init__(self, settings: Settings, config: ConfigView, bridge: Bridge) -> None:
        self.settings = settings
        self.config = config
        self.bridge = bridge
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
        key = self.request_key(request)
        body = await read_json(request)
        if isinstance(body, dict):
            body.setdefault("tenant", tenant.tenant_id)
        task = parse_body(TaskRequest, body)
        if task.tenant != tenant.tenant_id:
            raise Problem(403, "wrong-tenant", "body.tenant does not match the API key's tenant")
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
                f"submit {short}", attributes={"lapverse.request_id": request_id}
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

    async def put_tenant(self, request: web.Request) -> web.Response:
        """PUT /admin/v1/tenants/{tenantId}: create or update a tenant."""
        authenticate_admin(request, self.settings.admin_token)
        tenant_id = request.match_info["tenant_id"]
        body = parse_body(TenantBody, await read_json(request))
        old = self.config.tenants.get(tenant_id)
        try:
            tenant = TenantConfig(
                tenant_id=tenant_id,
                mrr_micros=usd_to_micros(body.mrr),
                slo_target=body.slo_target,
                slo_window_days=body.slo_window_days,
                latency_objective_ms=body.latency_objective_ms,
                owner=body.owner,
                api_key_hashes=old.api_key_hashes if old else (),
                tags=FinOpsTags(
                    environment=self.settings.environment,
                    tenant_id=tenant_id,
                    cost_center="platform",
                    owner=body.owner,
                    version=self.settings.version,
                ),
            )
        except ValidationError as exc:
            raise Problem(400, "invalid-body", field_errors(exc)) from None
        await self.publish_tenant(tenant)
        return json_response(tenant_view(tenant), 200 if old else 201)

    async def post_api_key(self, request: web.Request) -> web.Response:
        """POST /admin/v1/tenants/{tenantId}/api-keys: a new key, shown once, stored hashed."""
        authenticate_admin(request, self.settings.admin_token)
        tenant = self.config.tenants.get(request.match_info["tenant_id"])
        if tenant is None:
            raise Problem(404, "not-found", "no such tenant; create it with PUT first")
        api_key = new_api_key()
        hashes = (*tenant.api_key_hashes, hash_api_key(api_key))
        await self.publish_tenant(tenant.model_copy(update={"api_key_hashes": hashes}))
        return json_response({"apiKey": api_key, "tenantId": tenant.tenant_id}, 201)

    async def put_flag(self, request: web.Request) -> web.Response:
        """PUT /admin/v1/flags/{flagKey}: store a flagd flag definition."""
        authenticate_admin(request, self.settings.admin_token)
        flag_key = request.match_info["flag_key"]
        if len(flag_key) > MAX_FLAG_KEY_LEN:
            raise Problem(
                400, "invalid-flag", f"flag keys are at most {MAX_FLAG_KEY_LEN} characters"
            )
        try:
            definition = flags.validate_flag(await read_json(request))
        except flags.FlagDefinitionError as exc:
            raise Problem(400, "invalid-flag", str(exc)) from None
        event = envelope(
            "flag.configured",
            f"{flag_key}:{now_ms()}",
            flag_key,
            FlagConfig(flag_key=flag_key, definition=definition),
            now_ms(),
            SOURCE,
        )
        await self.publish(topics.FLAGS, flag_key, encode(event))
        self.config.flags[flag_key] = definition
        return json_response({"flagKey": flag_key, **definition})

    async def publish_tenant(self, tenant: TenantConfig) -> None:
        """Write tenant configuration and apply it locally (read-your-writes)."""
        event = encode(
            envelope(
                "tenant.configured",
                f"{tenant.tenant_id}:{now_ms()}",
                tenant.tenant_id,
                tenant,
                now_ms(),
                SOURCE,
            )
        )
        await self.publish(topics.TENANTS, tenant.tenant_id, event)
        self.config.apply(self.settings.topic(topics.TENANTS), tenant.tenant_id.encode(), event)

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Write to a configuration topic or answer 503."""
        try:
            await self.bridge.publish(topic, key.encode(), value)
        except BrokerUnavailable as exc:
            raise Problem(
                503, "broker-unavailable", str(exc), headers={"Retry-After": "5"}
            ) from exc


class TenantBody(BaseModel):
    """Body of PUT /admin/v1/tenants/{tenantId}."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    mrr: float = Field(ge=0, allow_inf_nan=False)
    slo_target: float = Field(default=0.99, gt=0, lt=1, alias="sloTarget")
    owner: str = Field(default="unknown", min_length=1, max_length=128)
    slo_window_days: int = Field(default=30, ge=1, le=365, alias="sloWindowDays")
    latency_objective_ms: int = Field(default=30_000, ge=1, alias="latencyObjectiveMs")


def tenant_view(tenant: TenantConfig) -> dict[str, Any]:
    """Tenant as the admin API shows it (no key hashes)."""
    return {
        "tenantId": tenant.tenant_id,
        "mrr": usd(tenant.mrr_micros),
        "sloTarget": tenant.slo_target,
        "sloWindowDays": tenant.slo_window_days,
        "latencyObjectiveMs": tenant.latency_objective_ms,
        "owner": tenant.owner,
        "apiKeys": len(tenant.api_key_hashes),
    }


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
    if data.get("retryAfterS"):
        headers["Retry-After"] = str(data["retryAfterS"])
    raise Problem(
        data["httpStatus"], data["reason"].replace("_", "-"), data["detail"], headers=headers, **ids
    )


async def read_json(request: web.Request) -> Any:
    """The JSON body, or 400/413/415 saying what is wrong."""
    if request.content_type not in ("application/json", ""):
        raise Problem(415, "unsupported-media-type", "send application/json")
    raw = await request.read()
    if not raw:
        raise Problem(400, "invalid-body", "the request body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid-json", f"the body is not valid JSON: {exc}") from None


def parse_body(model: type[M], body: Any) -> M:
    """Validate a JSON body against a model, or 400 naming the fields."""
    if not isinstance(body, dict):
        raise Problem(400, "invalid-body", "the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise Problem(400, "invalid-body", field_errors(exc), fields=field_list(exc)) from None


def field_errors(exc: ValidationError) -> str:
    """One line naming each invalid field."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


def field_list(exc: ValidationError) -> list[str]:
    """The invalid fields' dotted paths."""
    return sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
