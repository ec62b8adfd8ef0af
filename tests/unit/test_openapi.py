"""schemas/openapi.yaml describes exactly the routes the gateway registers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import openapi_spec_validator
import orjson
import pytest
import yaml
from aiohttp import web
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from lapverse_streams.events.models import (
    MAX_IDEMPOTENCY_KEY_LEN,
    MAX_MRR_MICROS,
    TENANT_ID_PATTERN,
    ApiKeyInfo,
    Complexity,
    DecisionReason,
    FinOpsTags,
    Priority,
    Requirements,
    TaskRequest,
    TenantConfig,
)
from lapverse_streams.gateway.admin import TenantBody, key_view, tenant_view
from lapverse_streams.gateway.problems import Problem
from lapverse_streams.gateway.server import create_app
from lapverse_streams.settings import Settings

OPENAPI_PATH = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
AUTO_METHODS = {"HEAD", "OPTIONS"}  # aiohttp adds HEAD beside every GET
TEMPLATE_PARAM = re.compile(r"{([^}]+)}")

Operation = tuple[str, str]  # (METHOD, path)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    """The OpenAPI document as committed."""
    loaded: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    return loaded


def operations(doc: dict[str, Any]) -> dict[Operation, dict[str, Any]]:
    """Every operation of the document by (METHOD, path)."""
    return {
        (method.upper(), path): item[method]
        for path, item in doc["paths"].items()
        for method in METHODS
        if method in item
    }


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """The target of a local $ref such as #/components/schemas/Problem."""
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    """Every $ref value anywhere under a node."""
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def parameters(doc: dict[str, Any], path: str, operation: dict[str, Any]) -> list[dict[str, Any]]:
    """The operation's parameters with path-level ones, references resolved."""
    declared = [*doc["paths"][path].get("parameters", []), *operation.get("parameters", [])]
    return [resolve(doc, p["$ref"]) if "$ref" in p else p for p in declared]


def schema_properties(model: type[BaseModel]) -> set[str]:
    """The wire names of a model's fields."""
    return set(model.model_json_schema(by_alias=True)["properties"])


def component(doc: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator of one component schema, its references resolved within the document."""
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    )


def test_is_openapi_3_1(doc: dict[str, Any]) -> None:
    assert str(doc["openapi"]).startswith("3.1")
    assert doc["info"]["title"]
    assert doc["info"]["version"]


def test_passes_openapi_spec_validator(doc: dict[str, Any]) -> None:
    openapi_spec_validator.validate(doc)


def test_every_operation_is_well_formed(doc: dict[str, Any]) -> None:
    schemes = set(doc["components"]["securitySchemes"])
    operation_ids = []
    for (method, path), operation in operations(doc).items():
        where = f"{method} {path}"
        operation_ids.append(operation["operationId"])
        responses = operation.get("responses")
        assert responses, f"{where} has no responses"
        for code in responses:
            assert isinstance(code, str), f"{where}: quote status code {code}"
            assert code == "default" or re.fullmatch(r"[1-5]\d\d", code), f"{where}: {code}"
        for requirement in operation.get("security", []):
            assert set(requirement) <= schemes, f"{where} uses an undefined security scheme"
        in_path = [p["name"] for p in parameters(doc, path, operation) if p["in"] == "path"]
        assert sorted(in_path) == sorted(TEMPLATE_PARAM.findall(path)), where
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    for ref in refs(doc):
        assert resolve(doc, ref) is not None, ref


def test_documents_exactly_the_registered_routes(doc: dict[str, Any]) -> None:
    app: web.Application = create_app(Settings())
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method not in AUTO_METHODS and route.resource is not None
    }
    documented = set(operations(doc))
    assert registered - documented == set(), "routes missing from schemas/openapi.yaml"
    assert documented - registered == set(), (
        "schemas/openapi.yaml documents routes that do not exist"
    )


def test_bodies_match_the_models(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert set(schemas["TaskRequest"]["properties"]) == schema_properties(TaskRequest)
    assert set(schemas["TenantBody"]["properties"]) == schema_properties(TenantBody)
    assert set(schemas["FinOpsTags"]["properties"]) == schema_properties(FinOpsTags)
    assert schemas["Priority"]["enum"] == [p.value for p in Priority]
    assert schemas["Complexity"]["enum"] == [c.value for c in Complexity]
    key = doc["components"]["parameters"]["IdempotencyKey"]
    assert key["schema"]["maxLength"] == MAX_IDEMPOTENCY_KEY_LEN


def test_component_schemas_are_valid_2020_12(doc: dict[str, Any]) -> None:
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_real_payloads_match_the_components(doc: dict[str, Any]) -> None:
    tags = FinOpsTags(environment="dev", tenant_id="acme", cost_center="x", owner="o", version="1")
    task = TaskRequest(
        type="ANALYSIS", tenant="acme", requirements=Requirements(complexity=Complexity.EXPERT)
    )
    tenant = TenantConfig(tenant_id="acme", mrr_micros=1_000_000, tags=tags)
    problem = Problem(400, "invalid-body", "type: missing", fields=["type"])
    info = ApiKeyInfo(key_id="0123456789ab", created_at_ms=1_700_000_000_000, last4="wxyz")
    payloads = {
        "TaskRequest": task.model_dump(mode="json", by_alias=True),
        "TenantBody": TenantBody(mrr=1000.0).model_dump(mode="json", by_alias=True),
        "FinOpsTags": tags.model_dump(mode="json", by_alias=True),
        "Tenant": tenant_view(tenant),
        "Problem": orjson.loads(problem.body or b""),
        "ApiKeyInfo": key_view(info),
        "ApiKeyList": {"tenantId": "acme", "apiKeys": [key_view(info), key_view("f" * 64)]},
    }
    for name, payload in payloads.items():
        errors = [e.message for e in component(doc, name).iter_errors(payload)]
        assert errors == [], f"{name}: {errors}"


ERROR_CODES = {"400", "401", "403", "404", "405", "409", "413", "415", "422", "429", "503"}
# what each kind of operation can answer besides its success codes
EXPECTED_ERRORS = {
    ("POST", "/api/v2/tasks"): {
        "400",
        "401",
        "402",
        "403",
        "404",
        "409",
        "413",
        "415",
        "422",
        "429",
        "503",
    },
    ("POST", "/api/v2/self-compete"): {
        "400",
        "401",
        "402",
        "403",
        "404",
        "409",
        "413",
        "415",
        "422",
        "429",
        "503",
    },
    ("GET", "/api/v2/tasks/{task_id}"): {"401", "403", "404"},
    ("GET", "/api/v2/self-compete/{competition_id}"): {"401", "403", "404"},
    ("PUT", "/admin/v1/tenants/{tenant_id}"): {"400", "401", "413", "415", "503"},
    ("POST", "/admin/v1/tenants/{tenant_id}/api-keys"): {"401", "404", "503"},
    ("GET", "/admin/v1/tenants/{tenant_id}/api-keys"): {"401", "404"},
    ("DELETE", "/admin/v1/tenants/{tenant_id}/api-keys/{key_id}"): {"401", "404", "503"},
    ("PUT", "/admin/v1/flags/{flag_key}"): {"400", "401", "413", "415", "503"},
    ("GET", "/api/status"): {"401", "403"},
    ("GET", "/api/v2/champions"): {"401", "403"},
    ("GET", "/api/v2/champions/{family}"): {"400", "401", "403", "404"},
    ("GET", "/api/v2/champions/{family}/history"): {"400", "401", "403", "404"},
    ("POST", "/admin/v1/tenants/{tenant_id}/champions/{family}/pin"): {
        "400",
        "401",
        "404",
        "413",
        "415",
        "503",
    },
    ("POST", "/admin/v1/tenants/{tenant_id}/champions/{family}/unpin"): {
        "400",
        "401",
        "404",
        "409",
        "503",
    },
    ("POST", "/admin/v1/tenants/{tenant_id}/champions/{family}/rollback"): {
        "400",
        "401",
        "404",
        "409",
        "503",
    },
}


def test_every_error_the_gateway_answers_is_documented(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    for operation, codes in EXPECTED_ERRORS.items():
        assert codes <= set(ops[operation]["responses"]), (
            operation,
            codes - set(ops[operation]["responses"]),
        )
    for operation, item in ops.items():
        for code in set(item["responses"]) & ERROR_CODES:
            response = item["responses"][code]
            if "$ref" in response:
                response = resolve(doc, response["$ref"])
            assert "application/problem+json" in response.get("content", {}), (operation, code)


def test_rate_limits_are_documented_on_the_post_routes(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    for path in ("/api/v2/tasks", "/api/v2/self-compete"):
        limited = resolve(doc, ops[("POST", path)]["responses"]["429"]["$ref"])
        assert {"Retry-After", "RateLimit-Policy", "RateLimit"} <= set(limited["headers"])
        assert "RateLimit-Policy" in ops[("POST", path)]["responses"]["202"]["headers"]
    body = doc["components"]["schemas"]["TenantBody"]["properties"]
    assert {"rateLimitPerS", "burst"} <= set(body)
    assert body["mrr"]["maximum"] * 1_000_000 == MAX_MRR_MICROS
    reasons = doc["components"]["schemas"]["DecisionReason"]["enum"]
    assert reasons == [r.value for r in DecisionReason]


def test_tenant_id_pattern_is_the_models(doc: dict[str, Any]) -> None:
    param = doc["components"]["parameters"]["TenantIdPath"]
    assert param["schema"]["pattern"] == TENANT_ID_PATTERN
    assert "`..`" in param["description"]
    rotation = operations(doc)[("POST", "/admin/v1/tenants/{tenant_id}/api-keys")]["description"]
    assert "DELETE the old key" in rotation
