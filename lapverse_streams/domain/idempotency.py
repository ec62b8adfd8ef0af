"""Idempotency keys, payload fingerprints and deterministic task ids."""

from __future__ import annotations

import hashlib
import uuid

import orjson

from lapverse_streams.events.models import MAX_IDEMPOTENCY_KEY_LEN, Model

_TASK_NAMESPACE = uuid.UUID("6f1c1d2e-6a53-4f5e-9d7c-4c6b1b7a2e10")
_COMPETITION_NAMESPACE = uuid.UUID("0b3e9a4c-2f0d-4d8e-a1b7-5e6f7a8b9c0d")


def key_problem(key: str | None) -> str | None:
    """Why an idempotency key is unusable, or None when it is fine."""
    if key is None or key == "":
        return "Idempotency-Key is required"
    if len(key) > MAX_IDEMPOTENCY_KEY_LEN:
        return f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY_LEN} characters"
    if not key.isprintable():
        return "Idempotency-Key must be printable characters"
    return None


def task_id(tenant: str, key: str) -> str:
    """Deterministic task id for (tenant, idempotency key)."""
    return str(uuid.uuid5(_TASK_NAMESPACE, f"{tenant}\x00{key}"))


def competition_id(tenant: str, key: str) -> str:
    """Deterministic competition id for (tenant, idempotency key); never equal to a task id."""
    return str(uuid.uuid5(_COMPETITION_NAMESPACE, f"{tenant}\x00{key}"))


def fingerprint(request: Model) -> str:
    """sha256 of the request's canonical JSON (sorted keys, defaults applied)."""
    canonical = orjson.dumps(
        request.model_dump(mode="json", by_alias=True), option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()
