"""The login cache: <NEXUS_HOME>/credentials.json, readable only by its owner."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Credentials:
    email: str
    access_token: str
    refresh_token: str | None = None
    token_type: str = "bearer"
    expires_in: int | None = None
    obtained_at: float = 0.0

    @classmethod
    def from_token_response(cls, email: str, body: dict) -> Credentials:
        return cls(
            email=email,
            access_token=body["access_token"],
            refresh_token=body.get("refresh_token"),
            token_type=body.get("token_type", "bearer"),
            expires_in=body.get("expires_in"),
            obtained_at=time.time(),
        )

    @property
    def authorization(self) -> str:
        return f"Bearer {self.access_token}"


def save_credentials(path: Path, creds: Credentials) -> None:
    """Write via a fresh 0600 file and rename: an older file's looser mode is not inherited."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(creds), handle, indent=2)
    os.replace(tmp, path)


def load_credentials(path: Path) -> Credentials | None:
    try:
        return Credentials(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None  # a damaged cache is the same as none: the user logs in again
