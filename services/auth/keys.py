"""The Ed25519 key that signs every Nexus JWT: loaded from a PEM file, generated once for a
local stack, and published as a JWKS so other services verify tokens without a shared secret."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.auth.settings import AuthSettings
from shared.security import JWT_ALGORITHM

logger = logging.getLogger(__name__)

DEFAULT_KEY_FILE = Path("secrets") / "jwt-signing-key.pem"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey
    kid: str

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> SigningKey:
        return cls(private_key, thumbprint(private_key.public_key()))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, Any]:
        return {
            **_okp_members(self.public_key),
            "kid": self.kid,
            "alg": JWT_ALGORITHM,
            "use": "sig",
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}


def _okp_members(public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}


def thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint: stable for a key, so a verifier can tell keys apart by kid."""
    canonical = json.dumps(_okp_members(public_key), separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def signing_key_path(settings: AuthSettings) -> Path:
    return settings.jwt_signing_key_file or settings.home / DEFAULT_KEY_FILE


def load_or_create_signing_key(settings: AuthSettings) -> SigningKey:
    """Read the configured key. Only the default path is generated when missing, and never in
    production: a missing configured file is a deployment mistake, and a fresh key would
    silently log every user out."""
    path = signing_key_path(settings)
    if not path.exists():
        if settings.jwt_signing_key_file is not None:
            raise ValueError(f"NEXUS_JWT_SIGNING_KEY_FILE {path} does not exist")
        if settings.env == "production":
            raise ValueError(
                f"no JWT signing key at {path}: set NEXUS_JWT_SIGNING_KEY_FILE in production"
            )
        _generate_key_file(path)
        logger.warning("generated a new JWT signing key at %s", path)
    if path.stat().st_mode & 0o077:
        logger.warning("JWT signing key %s is readable by other users; chmod 600 it", path)
    return SigningKey.from_private_key(_read_private_key(path))


def _generate_key_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # mkdir's mode is masked by umask and skipped if it existed
    pem = Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    try:
        # O_EXCL with mode 0600: the file is never world-readable, not even for an instant.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process generated it first; use theirs
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key
