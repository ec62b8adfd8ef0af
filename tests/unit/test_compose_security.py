"""The compose file's defaults: nothing unauthenticated beyond the host, secrets from the env."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.kafka.yml"
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|(?:^|_)KEY$")
ENV_REFERENCE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:?[-?])(?P<word>[^}]*))?\}")
PUBLIC = {"gateway"}  # the authenticated API is the one door meant to face the network


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The compose services, with YAML anchors merged."""
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def published(service: dict[str, Any]) -> list[str]:
    """The `ports:` entries of a service, in short syntax."""
    return [str(port) for port in service.get("ports", [])]


def test_only_the_gateway_is_published_beyond_the_host(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name in PUBLIC:
            continue
        for port in published(service):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_kafka_listener_is_loopback_only(services: dict[str, Any]) -> None:
    assert all(port.startswith("127.0.0.1:") for port in published(services["kafka"]))


def test_prometheus_has_no_lifecycle_endpoint(services: dict[str, Any]) -> None:
    command = services["prometheus"].get("command", [])
    assert not any("enable-lifecycle" in str(arg) for arg in command)
    assert not any("enable-admin-api" in str(arg) for arg in command)


def test_grafana_admin_password_is_required_from_the_environment(
    services: dict[str, Any],
) -> None:
    env = services["grafana"]["environment"]
    reference = ENV_REFERENCE.fullmatch(str(env["GF_SECURITY_ADMIN_PASSWORD"]))
    assert reference is not None
    assert reference["op"] == ":?", "a missing password must stop `docker compose up`"
    assert str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"


def test_every_secret_comes_from_the_environment_without_a_default(
    services: dict[str, Any],
) -> None:
    secrets = [
        (name, key, str(value))
        for name, service in services.items()
        for key, value in (service.get("environment") or {}).items()
        if SECRET_NAME.search(key)
    ]
    assert {"LAPVERSE_ADMIN_TOKEN", "GF_SECURITY_ADMIN_PASSWORD"} <= {key for _, key, _ in secrets}
    for name, key, value in secrets:
        reference = ENV_REFERENCE.fullmatch(value)
        assert reference is not None, f"{name}.{key} is a literal"
        assert reference["op"] == ":?" or not reference["word"], f"{name}.{key} has a default"
