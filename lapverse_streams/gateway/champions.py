"""Champion routes: a tenant reads its champions and their history; an operator pins, unpins
and rolls back through commands the governor decides (domain/rollout.py)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lapverse_streams.clock import now_ms
from lapverse_streams.config_view import ConfigView
from lapverse_streams.domain.champions import command_record
from lapverse_streams.events import topics
from lapverse_streams.events.champion_models import VARIANT_PATTERN, ChampionAction, ChampionCommand
from lapverse_streams.events.models import FAMILY_PATTERN, TenantConfig
from lapverse_streams.gateway.admin import tenant_id_of
from lapverse_streams.gateway.auth import authenticate_admin, authenticate_tenant
from lapverse_streams.gateway.bridge import Bridge, BrokerUnavailable
from lapverse_streams.gateway.inputs import json_limits, parse_body, path_match, read_json
from lapverse_streams.gateway.problems import Problem, json_response
from lapverse_streams.settings import Settings
from lapverse_streams.variants.base import VariantFamily

SOURCE = "/lapverse/gateway"
DEFAULT_PAGE = 20
MAX_PAGE = 100


class OperatorBody(BaseModel):
    """Body of the unpin and rollback routes: who does it and why."""

    model_config = ConfigDict(extra="forbid")
    actor: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=1000)


class PinBody(OperatorBody):
    """Body of the pin route: the variant that serves everyone until unpinned."""

    variant: str = Field(pattern=VARIANT_PATTERN)


def history_link(family: str) -> str:
    """Where a family's champion history pages start."""
    return f"/api/v2/champions/{family}/history"


def rendered(entry: dict[str, Any]) -> dict[str, Any]:
    """A current champion entry as the API shows it, with its history link."""
    return {**entry, "links": {"history": history_link(entry["family"])}}


class ChampionRoutes:
    """GET /api/v2/champions[...] (tenant key) and the admin commands (admin token)."""

    def __init__(
        self,
        settings: Settings,
        config: ConfigView,
        bridge: Bridge,
        families: Mapping[str, VariantFamily],
    ) -> None:
        self.settings = settings
        self.config = config
        self.bridge = bridge
        self.families = families
        self.limits = json_limits(settings)

    async def list(self, request: web.Request) -> web.Response:
        """GET /api/v2/champions: every family of the caller's tenant with a champion."""
        tenant = authenticate_tenant(request, self.config)
        entries = self.bridge.champions.families(tenant.tenant_id)
        return json_response(
            {"tenantId": tenant.tenant_id, "champions": [rendered(e) for e in entries]}
        )

    async def get(self, request: web.Request) -> web.Response:
        """GET /api/v2/champions/{family}: the current champion, its rollout and evidence."""
        tenant = authenticate_tenant(request, self.config)
        family = family_of(request)
        return json_response(rendered(self._current(tenant.tenant_id, family)))

    async def history(self, request: web.Request) -> web.Response:
        """GET /api/v2/champions/{family}/history: champion events, newest first, paged."""
        tenant = authenticate_tenant(request, self.config)
        family = family_of(request)
        self._current(tenant.tenant_id, family)  # 404 for a family without a champion
        limit = query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE) or DEFAULT_PAGE
        before = query_int(request, "before", None, 1, 10**12)
        items = self.bridge.champions.history(tenant.tenant_id, family, before, limit)
        oldest = items[-1]["sequence"] if items else None
        more = len(items) == limit and oldest is not None and oldest > 1
        next_page = f"{history_link(family)}?before={oldest}&limit={limit}" if more else None
        return json_response({"family": family, "items": items, "next": next_page})

    def _current(self, tenant_id: str, family: str) -> dict[str, Any]:
        entry = self.bridge.champions.current(tenant_id, family)
        if entry is None:
            raise Problem(404, "not-found", f"no champion of family {family!r} for this tenant")
        return entry

    async def pin(self, request: web.Request) -> web.Response:
        """POST /admin/v1/tenants/{tenantId}/champions/{family}/pin."""
        tenant, family = self._admin_target(request)
        body = parse_body(PinBody, await read_json(request, self.limits))
        variants = self.families[family].variants
        if body.variant not in variants:
            raise Problem(
                400,
                "invalid-variant",
                f"{body.variant!r} is not a variant of {family!r} (known: {', '.join(variants)})",
                fields=["variant"],
            )
        return await self._command(tenant, family, "pin", body, body.variant)

    async def unpin(self, request: web.Request) -> web.Response:
        """POST /admin/v1/tenants/{tenantId}/champions/{family}/unpin."""
        tenant, family = self._admin_target(request)
        body = parse_body(OperatorBody, await read_json(request, self.limits))
        current = self.bridge.champions.current(tenant.tenant_id, family)
        if current is None or current["state"] != "pinned":
            raise Problem(409, "not-pinned", f"the {family!r} champion is not pinned")
        return await self._command(tenant, family, "unpin", body)

    async def rollback(self, request: web.Request) -> web.Response:
        """POST /admin/v1/tenants/{tenantId}/champions/{family}/rollback."""
        tenant, family = self._admin_target(request)
        body = parse_body(OperatorBody, await read_json(request, self.limits))
        current = self.bridge.champions.current(tenant.tenant_id, family)
        if current is None or current["state"] == "rolled-back":
            state = "has no champion" if current is None else "is already rolled back"
            raise Problem(409, "nothing-to-roll-back", f"the {family!r} rollout {state}")
        if not (current["previous"] or current["baseline"]):
            raise Problem(409, "nothing-to-roll-back", "there is no previous champion")
        return await self._command(tenant, family, "rollback", body)

    def _admin_target(self, request: web.Request) -> tuple[TenantConfig, str]:
        """The admin token, then the tenant (400/404) and the family (400/404) of the path."""
        authenticate_admin(request, self.settings.admin_token)
        tenant = self.config.tenants.get(tenant_id_of(request))
        if tenant is None:
            raise Problem(404, "not-found", "no such tenant; create it with PUT first")
        family = family_of(request)
        if family not in self.families:
            known = ", ".join(sorted(self.families)) or "none"
            raise Problem(404, "unknown-family", f"no family {family!r} (known: {known})")
        return tenant, family

    async def _command(
        self,
        tenant: TenantConfig,
        family: str,
        action: ChampionAction,
        body: OperatorBody,
        variant: str | None = None,
    ) -> web.Response:
        """Write the command; answer with the champion once the governor's event is read
        (200), or 202 while it is still on its way."""
        command = ChampionCommand(
            command_id=f"{action}-{uuid.uuid4().hex}",
            tenant=tenant.tenant_id,
            family=family,
            action=action,
            variant=variant,
            actor=body.actor,
            reason=body.reason,
            requested_at_ms=now_ms(),
        )
        key, value = command_record(command, SOURCE)
        try:
            reply = await self.bridge.submit(
                topics.CHAMPION_COMMANDS, key, value, [], command.command_id
            )
        except BrokerUnavailable as exc:
            raise Problem(
                503, "broker-unavailable", str(exc), headers={"Retry-After": "5"}
            ) from exc
        links = {"history": history_link(family)}
        if reply is None:
            pending = {"commandId": command.command_id, "status": "pending", "links": links}
            return json_response(pending, 202)
        entry = rendered(self._current(tenant.tenant_id, family))
        return json_response({"commandId": command.command_id, "status": "applied", **entry})


def family_of(request: web.Request) -> str:
    """The family named in the path, or 400."""
    detail = f"family names match {FAMILY_PATTERN}"
    return path_match(
        request, "family", FAMILY_PATTERN, "invalid-family", detail, fields=["family"]
    )


def query_int(
    request: web.Request, name: str, default: int | None, low: int, high: int
) -> int | None:
    """An integer query parameter in [low, high], or 400."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 13) or not low <= int(raw) <= high:
        raise Problem(400, "invalid-query", f"{name} must be an integer from {low} to {high}")
    return int(raw)
