"""Keys the local stack generates once, on first start, and never rewrites."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.stack.home import NexusHome

INTERNAL_TOKEN = "internal-token"
JWT_SIGNING_KEY = "jwt-signing-key.pem"
DEMO_PASSWORD = "demo-password"


@dataclass(frozen=True)
class StackSecrets:
    internal_token_file: Path
    jwt_signing_key_file: Path

    def env(self) -> dict[str, str]:
        """Services receive file paths, not values, so the secrets never show in `ps`."""
        return {
            "NEXUS_INTERNAL_TOKEN_FILE": str(self.internal_token_file),
            "NEXUS_JWT_SIGNING_KEY_FILE": str(self.jwt_signing_key_file),
        }


def write_private_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 from the first byte (no window where it is world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def ensure_secret(path: Path, generate: Callable[[], bytes]) -> Path:
    """Generate the secret only when absent: regenerating would log every user out."""
    if not path.exists():
        try:
            write_private_file(path, generate())
        except FileExistsError:
            pass  # a concurrent `nexus up` wrote it first; theirs is as good as ours
    return path


def new_internal_token() -> bytes:
    return secrets.token_urlsafe(32).encode()


def new_ed25519_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def new_password() -> bytes:
    return secrets.token_urlsafe(18).encode()


def ensure_secrets(home: NexusHome) -> StackSecrets:
    home.ensure()
    return StackSecrets(
        internal_token_file=ensure_secret(home.secrets / INTERNAL_TOKEN, new_internal_token),
        jwt_signing_key_file=ensure_secret(home.secrets / JWT_SIGNING_KEY, new_ed25519_pem),
    )


def demo_password(home: NexusHome) -> str:
    """The demo user's password: random, generated once, kept beside the other secrets."""
    home.ensure()
    path = ensure_secret(home.secrets / DEMO_PASSWORD, new_password)
    return path.read_text().strip()


POSTGRES_PASSWORD = "postgres-password"


def init_secret_dir(directory: Path, owner: str | None = None) -> list[Path]:
    """Secrets for a container deployment (the compose `secrets` step): the internal token,
    the JWT key and the Postgres password, generated once into a shared volume. `owner`
    is the unprivileged user the services run as; the files stay unreadable to others."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = [
        ensure_secret(directory / INTERNAL_TOKEN, new_internal_token),
        ensure_secret(directory / JWT_SIGNING_KEY, new_ed25519_pem),
        ensure_secret(directory / POSTGRES_PASSWORD, new_password),
    ]
    if owner is not None:
        import pwd

        user = pwd.getpwnam(owner)
        for path in [directory, *paths]:
            os.chown(path, user.pw_uid, user.pw_gid)
    return paths
