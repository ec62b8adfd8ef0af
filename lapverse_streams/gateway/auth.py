"""Bearer API keys, tenant matching and the admin token."""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from lapverse_streams.config_view import ConfigView
from lapverse_streams.events.models import TenantConfig
from lapverse_streams.gateway.problems import Problem

API_KEY_PREFIX = "lv_"


def new_api_key() -> str:
    """A fresh 256-bit API key."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def bearer(request: web.Request) -> str | None:
    """The bearer token of the Authorization header, if any."""
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def authenticate_tenant(request: web.Request, config: ConfigView) -> TenantConfig:
    """The tenant of the request's API key, matched against X-Tenant-ID (401/403)."""
    token = bearer(request)
    tenant = config.tenant_for_api_key(token) if token else None
    if tenant is None:
        raise Problem(
            401,
            "unauthorized",
            "a valid Authorization: Bearer <API key> header is required",
            headers={"WWW-Authenticate": 'Bearer realm="lapverse"'},
        )
    claimed = request.headers.get("X-Tenant-ID")
    if claimed != tenant.tenant_id:
        raise Problem(403, "wrong-tenant", "X-Tenant-ID does not match the API key's tenant")
    return tenant


def authenticate_admin(request: web.Request, admin_token: str) -> None:
    """Require the admin bearer token (401)."""
    token = bearer(request) or ""
    if not admin_token or not hmac.compare_digest(token.encode(), admin_token.encode()):
        raise Problem(
            401,
            "unauthorized",
            "the admin token is required",
            headers={"WWW-Authenticate": 'Bearer realm="lapverse-admin"'},
        )
