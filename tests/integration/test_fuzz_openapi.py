"""Property-based fuzzing of a running gateway from its own OpenAPI document (schemathesis)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Stack
from tests.integration.helpers import ADMIN, create_tenant

pytestmark = pytest.mark.kafka

OPENAPI_PATH = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"
EXAMPLES_PER_MODE = 50  # per operation and generation mode: under a minute in all
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]
TENANT = "fuzz-tenant"


async def tenant_key(stack: Stack) -> str:
    async with aiohttp.ClientSession() as session:
        return await create_tenant(session, stack, TENANT)


def auth_for(path: str, api_key: str) -> dict[str, str]:
    """Credentials that reach each operation's handler: the tenant's key or the admin token."""
    if path.startswith("/api/v2/"):
        return {"Authorization": f"Bearer {api_key}", "X-Tenant-ID": TENANT}
    return dict(ADMIN)


class Fuzzer:
    """Runs generated cases against the stack and keeps the counts and the failures."""

    def __init__(self, base_url: str, session: requests.Session) -> None:
        self.base_url = base_url
        self.session = session
        self.tried: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.unsatisfiable: list[str] = []

    def fuzz(self, operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
        """Send up to EXAMPLES_PER_MODE cases of one operation and check each answer."""
        label = operation.label

        @settings(
            max_examples=EXAMPLES_PER_MODE,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode, headers=headers))
        def run(case: Any) -> None:
            self.tried[label] += 1
            response = case.call(
                base_url=self.base_url, session=self.session, headers=headers, timeout=15
            )
            self.statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except (AssertionError, FailureGroup) as exc:
                self.failures.append(f"{label} -> {response.status_code}: {exc}"[:2000])

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (e.g. no parameters besides the fixed ones)
            self.unsatisfiable.append(f"{label} {mode.value}")


def test_no_input_gets_a_5xx_or_an_undocumented_answer(stack: Stack) -> None:
    api_key = asyncio.run(tenant_key(stack))
    schema = schemathesis.openapi.from_path(OPENAPI_PATH)
    with requests.Session() as session:
        fuzzer = Fuzzer(stack.base_url, session)
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzzer.fuzz(operation, mode, auth_for(operation.path, api_key))
    statuses = fuzzer.statuses
    print(f"schemathesis tried {sum(fuzzer.tried.values())} inputs; statuses {dict(statuses)}")
    print(f"no negative cases for: {fuzzer.unsatisfiable}")
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    assert server_errors == 0, fuzzer.failures
    assert fuzzer.failures == [], "\n\n".join(fuzzer.failures[:10])
    assert len(fuzzer.tried) >= 10
