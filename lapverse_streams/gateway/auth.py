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
    """The bearer token of the Authorization header, if any (tokens are printable ASCII)."""
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not (token.isascii() and token.isprintable()):
        return None  # undecodable bytes arrive as surrogates: no key has them
    return token or None


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


def is_admin(request: web.Request, admin_token: str) -> bool:
    """Whether the request carries the admin token (never true while it is unset)."""
    token = bearer(request) or ""
    return bool(admin_token) and hmac.compare_digest(token.encode(), admin_token.encode())


def authenticate_admin(request: web.Request, admin_token: str) -> None:
    """Require the admin bearer token (401)."""
    if not is_admin(request, admin_token):
        raise Problem(
            401,
            "unauthorized",
            "the admin token is required",
            headers={"WWW-Authenticate": 'Bearer realm="lapverse-admin"'},
        )
