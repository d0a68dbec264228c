"""Settings validation: URLs normalized, secrets required where they matter."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.memory.settings import MemorySettings
from shared.settings import NexusSettings, normalize_database_url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h:5432/db",
        "postgres://u@h:5432/db",
        "postgresql+asyncpg://u@h:5432/db",
        "postgresql+psycopg://u@h:5432/db",
    ],
)
def test_database_urls_use_asyncpg(url: str) -> None:
    assert normalize_database_url(url) == "postgresql+asyncpg://u@h:5432/db"


def test_non_postgres_database_url_is_refused() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        normalize_database_url("mysql://u@h/db")


def test_service_settings_require_database_and_nats(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEXUS_DATABASE_URL", "NEXUS_NATS_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError) as raised:
        MemorySettings()  # type: ignore[call-arg]
    missing = {err["loc"][0] for err in raised.value.errors()}
    assert missing == {"database_url", "nats_url"}


def test_port_comes_from_the_service_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("NEXUS_NATS_URL", "nats://h:4222")
    monkeypatch.setenv("NEXUS_MEMORY_PORT", "9102")
    assert MemorySettings().port == 9102  # type: ignore[call-arg]


def test_production_refuses_placeholder_internal_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_NATS_URL", "nats://h:4222")
    with pytest.raises(ValidationError, match="NEXUS_INTERNAL_TOKEN"):
        NexusSettings(env="production", internal_token="changeme")  # type: ignore[arg-type]


def test_internal_token_is_read_from_a_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-token-value\n")
    monkeypatch.setenv("NEXUS_NATS_URL", "nats://h:4222")
    monkeypatch.delenv("NEXUS_INTERNAL_TOKEN", raising=False)
    settings = NexusSettings(internal_token_file=token_file)
    assert settings.internal_token_value() == "s3cr3t-token-value"


def test_artifacts_default_under_home(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NEXUS_NATS_URL", "nats://h:4222")
    monkeypatch.delenv("NEXUS_ARTIFACTS", raising=False)
    settings = NexusSettings(home=tmp_path)
    assert settings.artifacts == f"file://{tmp_path.resolve()}/artifacts"


def test_database_password_file_is_inserted_into_the_url(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "pg-password"
    secret.write_text("p@ss/word\n")
    monkeypatch.setenv("NEXUS_DATABASE_URL", "postgresql://nexus@db:5432/nexus")
    monkeypatch.setenv("NEXUS_NATS_URL", "nats://h:4222")
    monkeypatch.setenv("NEXUS_DATABASE_PASSWORD_FILE", str(secret))
    settings = MemorySettings()  # type: ignore[call-arg]
    assert settings.database_url == "postgresql+asyncpg://nexus:p%40ss%2Fword@db:5432/nexus"
