"""Secrets: created private on first start, never regenerated."""

from __future__ import annotations

import stat

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from cli.stack.secrets import demo_password, ensure_secrets


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_private_and_usable(home):
    secrets = ensure_secrets(home)

    assert mode(home.secrets) == 0o700
    assert mode(secrets.internal_token_file) == 0o600
    assert mode(secrets.jwt_signing_key_file) == 0o600
    assert len(secrets.internal_token_file.read_text()) >= 43  # 32 random bytes, base64url
    key = load_pem_private_key(secrets.jwt_signing_key_file.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    assert secrets.env() == {
        "NEXUS_INTERNAL_TOKEN_FILE": str(secrets.internal_token_file),
        "NEXUS_JWT_SIGNING_KEY_FILE": str(secrets.jwt_signing_key_file),
    }


def test_second_start_keeps_the_same_secrets(home):
    first = ensure_secrets(home)
    token, key = first.internal_token_file.read_bytes(), first.jwt_signing_key_file.read_bytes()

    second = ensure_secrets(home)

    assert second.internal_token_file.read_bytes() == token
    assert second.jwt_signing_key_file.read_bytes() == key


def test_demo_password_is_generated_once(home):
    password = demo_password(home)
    assert len(password) >= 20
    assert demo_password(home) == password
    assert mode(home.secrets / "demo-password") == 0o600


def test_secrets_init_for_containers_creates_private_files_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from cli.main import app

    target = tmp_path / "secrets"
    first = CliRunner().invoke(app, ["secrets", "init", str(target)])
    assert first.exit_code == 0, first.output
    contents = {p.name: p.read_bytes() for p in target.iterdir()}
    assert set(contents) == {"internal-token", "jwt-signing-key.pem", "postgres-password"}
    assert all((target / name).stat().st_mode & 0o777 == 0o600 for name in contents)

    CliRunner().invoke(app, ["secrets", "init", str(target)])
    assert {p.name: p.read_bytes() for p in target.iterdir()} == contents
