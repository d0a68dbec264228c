"""Argon2id password hashing, off the event loop (one hash costs tens of milliseconds of CPU)."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None

    async def prepare(self) -> None:
        """Make the dummy hash at start-up, so the first unknown-user login is not slower."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """False for a wrong password or no user. Without a user a dummy hash is still checked,
        so the answer takes as long and does not tell which emails have accounts."""
        if password_hash is None:
            await self.prepare()
            assert self._dummy_hash is not None
            await asyncio.to_thread(self._check, self._dummy_hash, password)
            return False
        return await asyncio.to_thread(self._check, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def _check(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
