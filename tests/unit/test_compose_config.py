"""docker-compose.kafka.yml parses and resolves, checked by a compose parser (no engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.kafka.yml"
SECRETS = {"LAPVERSE_ADMIN_TOKEN": "t" * 32, "GRAFANA_ADMIN_PASSWORD": "p" * 32}


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` of the file (Debian's docker-compose; `make tools` installs it)."""
    tool = shutil.which("docker-compose")
    assert tool is not None, "docker-compose is missing: run `make tools`"
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [tool, "-f", str(COMPOSE), "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_compose_file_resolves_with_its_secrets_set() -> None:
    result = compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert services["topics"]["command"] == ["topics"]
    for role in ("worker", "gateway"):
        assert services[role]["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully"
        )


def test_the_compose_file_refuses_to_start_without_its_secrets() -> None:
    result = compose_config({})
    assert result.returncode != 0
    assert "LAPVERSE_ADMIN_TOKEN" in result.stderr or "GRAFANA_ADMIN_PASSWORD" in result.stderr
