"""The compose stack and the image, checked statically (no Docker engine runs here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import SERVICE_PORTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_service_runs_its_module_on_its_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, port in SERVICE_PORTS.items():
        service = services[name]
        assert service["command"] == ["python", "-m", f"services.{name}"]
        assert f"{port}:{port}" in service["ports"]
        assert f"{port}/readyz" in " ".join(service["healthcheck"]["test"])


def test_services_wait_for_healthy_infrastructure_and_migrations(compose: dict[str, Any]) -> None:
    for name in SERVICE_PORTS:
        depends = compose["services"][name]["depends_on"]
        assert depends["nats"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["python", "-m", "shared.migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_infrastructure_has_health_checks_and_jetstream(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    assert "-js" in nats["command"]
    assert "healthcheck" in nats
    assert "healthcheck" in compose["services"]["postgres"]


def test_environment_carries_the_contract_and_no_secret_values(compose: dict[str, Any]) -> None:
    env = compose["services"]["trainer"]["environment"]
    for variable in ("NEXUS_DATABASE_URL", "NEXUS_NATS_URL", "NEXUS_ARTIFACTS", "NEXUS_HOME"):
        assert env[variable]
    assert env["NEXUS_INTERNAL_TOKEN_FILE"].startswith("/secrets/")
    assert env["NEXUS_DATABASE_PASSWORD_FILE"].startswith("/secrets/")
    assert ":" not in env["NEXUS_DATABASE_URL"].split("@")[0].split("//")[1]  # no password
    postgres_env = compose["services"]["postgres"]["environment"]
    assert "POSTGRES_PASSWORD" not in postgres_env
    assert postgres_env["POSTGRES_PASSWORD_FILE"].startswith("/secrets/")


def test_dockerfile_runs_unprivileged_and_exposes_the_ports() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "USER nexus" in dockerfile
    for port in SERVICE_PORTS.values():
        assert str(port) in dockerfile


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_served_models_listen_where_their_published_ports_reach(compose: dict[str, Any]) -> None:
    deployer = compose["services"]["deployer"]
    assert deployer["environment"]["NEXUS_MODEL_BIND_HOST"] == "0.0.0.0"
    assert deployer["environment"]["NEXUS_MODEL_HOST"] == "deployer"
    assert deployer["environment"]["NEXUS_DATABASE_URL"]  # the shared settings still apply
    assert "8100-8120:8100-8120" in deployer["ports"]
