"""Settings every service shares, read from `NEXUS_*` environment variables.

Each service subclasses `ServiceSettings` for its own port and knobs. Database and NATS URLs
have no defaults on purpose: a service must be told where its state lives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Self
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_PORTS: dict[str, int] = {
    "auth": 8001,
    "memory": 8002,
    "cluster": 8003,
    "trainer": 8004,
    "validator": 8005,
    "deployer": 8006,
}

# A node silent for this many heartbeat intervals is declared lost.
HEARTBEAT_MISSES = 3

_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev", "test"}


def normalize_database_url(url: str) -> str:
    """Accept the usual `postgresql://` spellings and use the asyncpg driver everywhere."""
    for prefix in (
        "postgresql+asyncpg://",
        "postgresql+psycopg://",
        "postgresql://",
        "postgres://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(
        f"NEXUS_DATABASE_URL must be a postgresql:// URL, got {url.split(':', 1)[0]}://"
    )


def with_password(url: str, password: str) -> str:
    """Insert a password into a database URL that names a user but no password."""
    scheme, _, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at:
        raise ValueError("NEXUS_DATABASE_URL must name a user when a password file is given")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:{quote(password, safe='')}@{location}"


def database_url_from_env() -> str:
    """The database URL for tools that are not services (migrations), honouring the file."""
    url = normalize_database_url(os.environ["NEXUS_DATABASE_URL"])
    password_file = os.environ.get("NEXUS_DATABASE_PASSWORD_FILE")
    if password_file:
        url = with_password(url, Path(password_file).read_text().strip())
    return url


class CredentialSettings(BaseSettings):
    """How a process checks callers as the services do: the auth service that issued their
    credentials, and the internal token services send each other. A model server reads
    these alone; it needs no NATS or database."""

    model_config = SettingsConfigDict(env_prefix="NEXUS_", extra="ignore")

    internal_token: SecretStr | None = None
    internal_token_file: Path | None = None
    auth_url: str = f"http://127.0.0.1:{SERVICE_PORTS['auth']}"

    @model_validator(mode="after")
    def _read_token_file(self) -> Self:
        if self.internal_token is None and self.internal_token_file is not None:
            self.internal_token = SecretStr(self.internal_token_file.read_text().strip())
        return self

    def internal_token_or_none(self) -> str | None:
        return self.internal_token.get_secret_value() if self.internal_token else None

    def internal_token_value(self) -> str:
        if self.internal_token is None:
            raise ValueError(
                "no internal token: set NEXUS_INTERNAL_TOKEN or NEXUS_INTERNAL_TOKEN_FILE"
            )
        return self.internal_token.get_secret_value()


class NexusSettings(CredentialSettings):
    """Variables that every Nexus process understands (services, nodes, CLI)."""

    env: Literal["development", "test", "production"] = "development"
    home: Path = Path(".nexus")
    artifacts: str = ""
    nats_url: str
    otlp_endpoint: str | None = None
    log_level: str = "INFO"
    # How often a node says it is alive; the cluster declares it lost after three missed.
    heartbeat_interval_s: float = Field(default=0.5, gt=0, le=60)
    # How long a node goes on after the service that started it died, waiting for a
    # restarted one to adopt it; then it leaves, so no node outlives the platform for long.
    node_orphan_grace_s: float = Field(default=60.0, gt=0, le=3600)

    @property
    def loss_detection_s(self) -> float:
        """How long a lost node may go unnoticed: its silence, plus a second for the news."""
        return HEARTBEAT_MISSES * self.heartbeat_interval_s + 1.0

    # Prefix of this deployment's durable consumer names (tests use one per run).
    consumer_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_-]*$", max_length=40)

    memory_url: str = f"http://127.0.0.1:{SERVICE_PORTS['memory']}"
    cluster_url: str = f"http://127.0.0.1:{SERVICE_PORTS['cluster']}"
    trainer_url: str = f"http://127.0.0.1:{SERVICE_PORTS['trainer']}"
    validator_url: str = f"http://127.0.0.1:{SERVICE_PORTS['validator']}"
    deployer_url: str = f"http://127.0.0.1:{SERVICE_PORTS['deployer']}"

    @model_validator(mode="after")
    def _resolve_paths_and_secrets(self) -> NexusSettings:
        self.home = self.home.expanduser().resolve()
        if not self.artifacts:
            self.artifacts = f"file://{self.home / 'artifacts'}"
        token = self.internal_token_or_none() or ""
        if self.env == "production" and token.lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("NEXUS_INTERNAL_TOKEN must be set to a real secret in production")
        return self

    @classmethod
    def from_env(cls) -> Self:
        """Read every field from `NEXUS_*` variables (the required URLs have no defaults)."""
        return cls()  # type: ignore[call-arg]


class ServiceSettings(NexusSettings):
    """A web service: it also needs a database and a port."""

    database_url: str
    # Lets a container keep the password out of its environment (compose mounts a secret).
    database_password_file: Path | None = None
    host: str = "127.0.0.1"
    # Each service overrides `port` with its own default and `NEXUS_<SERVICE>_PORT` alias.
    port: int = Field(default=0, ge=0, le=65535)
    # How long a node has to accept (not finish) a task before its dispatch counts as failed.
    node_task_accept_timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("database_url")
    @classmethod
    def _asyncpg_driver(cls, value: str) -> str:
        return normalize_database_url(value)

    @model_validator(mode="after")
    def _password_from_file(self) -> ServiceSettings:
        if self.database_password_file is not None:
            self.database_url = with_password(
                self.database_url, self.database_password_file.read_text().strip()
            )
        return self
