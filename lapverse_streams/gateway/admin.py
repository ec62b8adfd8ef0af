"""Admin routes (tenants, API keys, flags) and the status report scoped to its caller."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lapverse_streams.clock import now_ms
from lapverse_streams.config_view import ConfigView, hash_api_key
from lapverse_streams.domain import flags
from lapverse_streams.domain.pricing import MICROS_PER_USD, usd, usd_to_micros
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode_event
from lapverse_streams.events.models import (
    MAX_MRR_MICROS,
    TENANT_ID_PATTERN,
    ApiKeyInfo,
    FinOpsTags,
    FlagConfig,
    TenantConfig,
)
from lapverse_streams.gateway.auth import (
    authenticate_admin,
    authenticate_tenant,
    is_admin,
    new_api_key,
)
from lapverse_streams.gateway.bridge import Bridge, BrokerUnavailable
from lapverse_streams.gateway.inputs import (
    field_errors,
    json_limits,
    parse_body,
    path_match,
    read_json,
)
from lapverse_streams.gateway.problems import Problem, json_response
from lapverse_streams.settings import Settings

SOURCE = "/lapverse/gateway"
FLAG_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
KEY_ID_CHARS = 12  # a key id is the first 12 hex digits of the key's sha256
PUBLIC_STATUS = (
    "status",
    "healthScore",
    "health",
    "uptimeS",
    "broker",
    "workersLive",
    "breakers",
    "consumerLag",
)


class TenantBody(BaseModel):
    """Body of PUT /admin/v1/tenants/{tenantId}."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    mrr: float = Field(ge=0, le=MAX_MRR_MICROS / MICROS_PER_USD, allow_inf_nan=False)
    slo_target: float = Field(default=0.99, gt=0, lt=1, alias="sloTarget")
    owner: str = Field(default="unknown", min_length=1, max_length=128)
    slo_window_days: int = Field(default=30, ge=1, le=365, alias="sloWindowDays")
    latency_objective_ms: int = Field(default=30_000, ge=1, alias="latencyObjectiveMs")
    rate_limit_per_s: float | None = Field(
        default=None, gt=0, le=1_000_000, allow_inf_nan=False, alias="rateLimitPerS"
    )
    burst: int | None = Field(default=None, ge=1, le=1_000_000)


class AdminRoutes:
    """Handlers of /admin/v1 (admin token) and GET /api/status (any caller, scoped)."""

    def __init__(self, settings: Settings, config: ConfigView, bridge: Bridge) -> None:
        self.settings = settings
        self.config = config
        self.bridge = bridge
        self.limits = json_limits(settings)

    async def put_tenant(self, request: web.Request) -> web.Response:
        """PUT /admin/v1/tenants/{tenantId}: create or update a tenant."""
        authenticate_admin(request, self.settings.admin_token)
        tenant_id = tenant_id_of(request)
        body = parse_body(TenantBody, await read_json(request, self.limits))
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
                api_keys=old.api_keys if old else (),
                rate_limit_per_s=body.rate_limit_per_s,
                burst=body.burst,
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

    def tenant(self, request: web.Request) -> TenantConfig:
        """The tenant named in the path, or 404."""
        tenant = self.config.tenants.get(request.match_info["tenant_id"])
        if tenant is None:
            raise Problem(404, "not-found", "no such tenant; create it with PUT first")
        return tenant

    async def post_api_key(self, request: web.Request) -> web.Response:
        """POST /admin/v1/tenants/{tenantId}/api-keys: a new key, shown once, stored hashed."""
        authenticate_admin(request, self.settings.admin_token)
        tenant = self.tenant(request)
        api_key = new_api_key()
        key_hash = hash_api_key(api_key)
        info = ApiKeyInfo(
            key_id=key_hash[:KEY_ID_CHARS], created_at_ms=now_ms(), last4=api_key[-4:]
        )
        update = {
            "api_key_hashes": (*tenant.api_key_hashes, key_hash),
            "api_keys": (*tenant.api_keys, info),
        }
        await self.publish_tenant(tenant.model_copy(update=update))
        return json_response(
            {"apiKey": api_key, "tenantId": tenant.tenant_id, **key_view(info)}, 201
        )

    async def list_api_keys(self, request: web.Request) -> web.Response:
        """GET /admin/v1/tenants/{tenantId}/api-keys: id, creation time and last four of each."""
        authenticate_admin(request, self.settings.admin_token)
        tenant = self.tenant(request)
        keys = [key_view(info) for info in key_infos(tenant)]
        return json_response({"tenantId": tenant.tenant_id, "apiKeys": keys})

    async def delete_api_key(self, request: web.Request) -> web.Response:
        """DELETE /admin/v1/tenants/{tenantId}/api-keys/{keyId}: revoke one key everywhere."""
        authenticate_admin(request, self.settings.admin_token)
        tenant = self.tenant(request)
        key_id = request.match_info["key_id"]
        kept = tuple(h for h in tenant.api_key_hashes if h[:KEY_ID_CHARS] != key_id)
        if len(kept) == len(tenant.api_key_hashes):
            raise Problem(404, "not-found", "no such API key for this tenant")
        infos = tuple(info for info in tenant.api_keys if info.key_id != key_id)
        await self.publish_tenant(
            tenant.model_copy(update={"api_key_hashes": kept, "api_keys": infos})
        )
        return web.Response(status=204)

    async def put_flag(self, request: web.Request) -> web.Response:
        """PUT /admin/v1/flags/{flagKey}: store a flagd flag definition."""
        authenticate_admin(request, self.settings.admin_token)
        flag_key = path_match(
            request,
            "flag_key",
            FLAG_KEY_PATTERN,
            "invalid-flag",
            f"flag keys match {FLAG_KEY_PATTERN}",
        )
        try:
            definition = flags.validate_flag(await read_json(request, self.limits))
        except flags.FlagDefinitionError as exc:
            raise Problem(400, "invalid-flag", str(exc)) from None
        value = encode_event(
            "flag.configured",
            f"{flag_key}:{now_ms()}",
            flag_key,
            FlagConfig(flag_key=flag_key, definition=definition),
            now_ms(),
            SOURCE,
        )
        partition, offset = await self.publish(topics.FLAGS, flag_key, value)
        self.config.apply_written(
            self.settings.topic(topics.FLAGS), flag_key.encode(), value, partition, offset
        )
        return json_response({"flagKey": flag_key, **definition})

    def visible_status(self, request: web.Request, report: dict[str, Any]) -> dict[str, Any]:
        """The report as the caller may see it: all (admin), one tenant (its key), or health."""
        if is_admin(request, self.settings.admin_token):
            return report
        public = {name: report[name] for name in PUBLIC_STATUS if name in report}
        if "Authorization" not in request.headers:
            return public
        tenant = authenticate_tenant(request, self.config)
        mine = report.get("tenants", {}).get(tenant.tenant_id)
        return {**public, "tenants": {tenant.tenant_id: mine} if mine else {}}

    async def publish_tenant(self, tenant: TenantConfig) -> None:
        """Write tenant configuration and apply it locally (read-your-writes)."""
        event = encode_event(
            "tenant.configured",
            f"{tenant.tenant_id}:{now_ms()}",
            tenant.tenant_id,
            tenant,
            now_ms(),
            SOURCE,
        )
        partition, offset = await self.publish(topics.TENANTS, tenant.tenant_id, event)
        self.config.apply_written(
            self.settings.topic(topics.TENANTS), tenant.tenant_id.encode(), event, partition, offset
        )

    async def publish(self, topic: str, key: str, value: bytes) -> tuple[int, int]:
        """Write to a configuration topic (its partition and offset) or answer 503."""
        try:
            return await self.bridge.publish(topic, key.encode(), value)
        except BrokerUnavailable as exc:
            raise Problem(
                503, "broker-unavailable", str(exc), headers={"Retry-After": "5"}
            ) from exc


def tenant_id_of(request: web.Request) -> str:
    """The tenant id of the path, or 400 when it is outside the pattern."""
    detail = f"tenant ids match {TENANT_ID_PATTERN}"
    return path_match(
        request, "tenant_id", TENANT_ID_PATTERN, "invalid-tenant-id", detail, fields=["tenantId"]
    )


def key_infos(tenant: TenantConfig) -> list[ApiKeyInfo | str]:
    """Each key of a tenant: its ApiKeyInfo, or the bare hash of a key issued before them."""
    known = {info.key_id: info for info in tenant.api_keys}
    return [known.get(h[:KEY_ID_CHARS], h) for h in tenant.api_key_hashes]


def key_view(info: ApiKeyInfo | str) -> dict[str, Any]:
    """One API key as the admin API shows it: never the key or its hash."""
    if isinstance(info, str):
        return {"keyId": info[:KEY_ID_CHARS], "createdAt": None, "last4": None}
    created = datetime.fromtimestamp(info.created_at_ms / 1000, tz=UTC)
    return {"keyId": info.key_id, "createdAt": created.isoformat(), "last4": info.last4}


def tenant_view(tenant: TenantConfig) -> dict[str, Any]:
    """Tenant as the admin API shows it (no key hashes)."""
    return {
        "tenantId": tenant.tenant_id,
        "mrr": usd(tenant.mrr_micros),
        "sloTarget": tenant.slo_target,
        "sloWindowDays": tenant.slo_window_days,
        "latencyObjectiveMs": tenant.latency_objective_ms,
        "owner": tenant.owner,
        "rateLimitPerS": tenant.rate_limit_per_s,
        "burst": tenant.burst,
        "apiKeys": len(tenant.api_key_hashes),
    }
