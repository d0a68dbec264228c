"""The signing key file: generated once with mode 0600, reused, and required in production."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from services.auth.app import create_app
from services.auth.keys import load_or_create_signing_key
from services.auth.settings import AuthSettings
from tests.services.auth.conftest import bearer, login, register
from tests.support import running


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_key_file_is_private_and_reused_across_restarts(
    service_env: dict[str, str], tmp_path: Path, email: str
) -> None:
    settings = AuthSettings(home=tmp_path / "home")  # type: ignore[call-arg]
    key_file = tmp_path / "home" / "secrets" / "jwt-signing-key.pem"

    first_app = create_app(settings)
    assert _mode(key_file) == 0o600
    assert _mode(key_file.parent) == 0o700
    pem = key_file.read_bytes()
    async with running(first_app) as client:
        await register(client, email)
        tokens = await login(client, email)

    second_app = create_app(settings)
    assert key_file.read_bytes() == pem
    assert second_app.state.auth.signing_key.kid == first_app.state.auth.signing_key.kid
    async with running(second_app) as client:
        me = await client.get("/auth/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 200  # a restart does not log anyone out


def test_a_configured_key_file_is_used(service_env: dict[str, str], tmp_path: Path) -> None:
    generated = load_or_create_signing_key(
        AuthSettings(home=tmp_path / "a")  # type: ignore[call-arg]
    )
    configured = load_or_create_signing_key(
        AuthSettings(  # type: ignore[call-arg]
            home=tmp_path / "b",
            jwt_signing_key_file=tmp_path / "a" / "secrets" / "jwt-signing-key.pem",
        )
    )
    assert configured.kid == generated.kid
    assert not (tmp_path / "b").exists()


def test_production_refuses_to_generate_a_key(service_env: dict[str, str], tmp_path: Path) -> None:
    settings = AuthSettings(env="production", home=tmp_path)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="NEXUS_JWT_SIGNING_KEY_FILE"):
        create_app(settings)
    assert not (tmp_path / "secrets").exists()


def test_a_missing_configured_key_file_is_an_error(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    settings = AuthSettings(  # type: ignore[call-arg]
        home=tmp_path, jwt_signing_key_file=tmp_path / "nope.pem"
    )
    with pytest.raises(ValueError, match="does not exist"):
        load_or_create_signing_key(settings)


def test_a_key_that_is_not_ed25519_is_refused(service_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    settings = AuthSettings(home=tmp_path, jwt_signing_key_file=path)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="not an Ed25519"):
        load_or_create_signing_key(settings)
