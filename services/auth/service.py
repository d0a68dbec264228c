"""What the auth service does, without HTTP: accounts, logins, token rotation, API keys."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.keys import SigningKey
from services.auth.models import ApiKey, User
from services.auth.passwords import Passwords
from services.auth.repository import AuthRepository, EmailTaken
from services.auth.tokens import TokenIssuer, TokenPair
from shared.errors import Conflict, NotFound, Unauthorized
from shared.security import API_KEY_PREFIX, Principal

API_KEY_RANDOM_BYTES = 32
API_KEY_DISPLAY_CHARS = 8
BAD_CREDENTIALS = "incorrect email or password"


@dataclass(frozen=True)
class AuthComponents:
    """The process-wide pieces the routes need, built once in create_app."""

    signing_key: SigningKey
    issuer: TokenIssuer
    passwords: Passwords


def hash_api_key(key: str) -> str:
    # The key carries 256 random bits, so a fast unsalted hash is enough to make a stolen
    # table useless (unlike passwords, which need argon2).
    return hashlib.sha256(key.encode()).hexdigest()


def new_tenant_id() -> str:
    return f"t-{secrets.token_hex(6)}"


class AuthService:
    def __init__(self, session: AsyncSession, components: AuthComponents) -> None:
        self._repo = AuthRepository(session)
        self._issuer = components.issuer
        self._passwords = components.passwords

    async def register(self, email: str, password: str, tenant: str | None) -> User:
        if await self._repo.email_exists(email):
            raise _email_taken()
        # Hash before claiming the tenant, so its row lock is held only for a moment.
        password_hash = await self._passwords.hash(password)
        if tenant is not None and not await self._repo.claim_tenant(tenant):
            # No invitations yet: a tenant belongs to the user who registered it first.
            raise Conflict(
                [{"field": "tenant", "message": f"tenant {tenant!r} already exists"}],
                error="tenant_exists",
            )
        if tenant is None:
            tenant = await self._claim_new_tenant()
        try:
            return await self._repo.add_user(email, password_hash, tenant)
        except EmailTaken:
            raise _email_taken() from None

    async def login(self, email: str, password: str) -> TokenPair:
        user = await self._repo.user_by_email(email)
        # Unknown user, wrong password and disabled account all read the same to the caller.
        verified = await self._passwords.verify(user.password_hash if user else None, password)
        if user is None or not verified or user.disabled:
            raise Unauthorized(BAD_CREDENTIALS)
        if self._passwords.needs_rehash(user.password_hash):
            await self._repo.set_password_hash(user, await self._passwords.hash(password))
        return await self._issue(user)

    async def refresh(self, refresh_token: str) -> TokenPair:
        claims = self._issuer.read_refresh(refresh_token)
        if not await self._repo.use_refresh_token(claims.jti, claims.user_id):
            raise Unauthorized("refresh token already used or revoked")
        user = await self._repo.active_user(claims.user_id)
        if user is None:
            raise Unauthorized("account disabled or removed")
        return await self._issue(user)

    async def user_for(self, principal: Principal) -> User:
        """The user behind a JWT or API key. The internal token stands for a service acting for
        a tenant, not for any user, so it has no account to show and cannot manage keys."""
        if principal.kind == "service":
            raise Unauthorized("the internal service token identifies no user")
        user = await self._repo.active_user(uuid.UUID(principal.subject))
        if user is None or user.tenant_id != principal.tenant_id:
            raise Unauthorized("account disabled or removed")
        return user

    async def create_api_key(
        self, user: User, name: str, scopes: list[str], expires_in_days: int | None
    ) -> tuple[ApiKey, str]:
        key = API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_RANDOM_BYTES)
        expires_at = None
        if expires_in_days is not None:
            expires_at = datetime.now(UTC) + timedelta(days=expires_in_days)
        api_key = await self._repo.add_api_key(
            user, name, key[:API_KEY_DISPLAY_CHARS], hash_api_key(key), scopes, expires_at
        )
        return api_key, key

    async def api_keys(self, user: User) -> list[ApiKey]:
        return await self._repo.api_keys_of(user.id)

    async def revoke_api_key(self, user: User, key_id: uuid.UUID) -> None:
        if not await self._repo.revoke_api_key(user.id, key_id):
            raise NotFound(f"no API key {key_id}")

    async def principal_for_api_key(self, key: str) -> Principal | None:
        found = await self._repo.live_api_key(hash_api_key(key))
        if found is None:
            return None
        api_key, user = found
        return Principal(user.tenant_id, str(user.id), "api_key", frozenset(api_key.scopes))

    async def _claim_new_tenant(self) -> str:
        # 48 random bits: a collision is improbable, but retrying costs nothing.
        for _ in range(5):
            tenant = new_tenant_id()
            if await self._repo.claim_tenant(tenant):
                return tenant
        raise RuntimeError("could not draw an unused tenant id")

    async def _issue(self, user: User) -> TokenPair:
        pair = self._issuer.issue_pair(user.id, user.tenant_id)
        await self._repo.add_refresh_token(pair.refresh_jti, user.id, pair.refresh_expires_at)
        return pair


def _email_taken() -> Conflict:
    return Conflict(
        [{"field": "email", "message": "an account with this email already exists"}],
        error="email_taken",
    )
