"""All SQL of the auth service. Domain code flushes; the request commits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.models import ApiKey, RefreshToken, Tenant, User

# Writing last_used_at on every request would turn each authenticated call into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class EmailTaken(Exception):
    pass


class AuthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # -- tenants and users ----------------------------------------------------------------

    async def claim_tenant(self, tenant_id: str) -> bool:
        """Create the tenant; False when it already exists (someone registered it first)."""
        result = await self._session.execute(
            pg_insert(Tenant)
            .values(id=tenant_id, created_at=datetime.now(UTC))
            .on_conflict_do_nothing()
            .returning(Tenant.id)
        )
        return result.first() is not None

    async def email_exists(self, email: str) -> bool:
        found = await self._session.scalar(select(User.id).where(User.email == email))
        return found is not None

    async def add_user(self, email: str, password_hash: str, tenant_id: str) -> User:
        user = User(
            id=uuid.uuid4(),
            email=email,
            password_hash=password_hash,
            tenant_id=tenant_id,
            created_at=datetime.now(UTC),
            disabled=False,
        )
        self._session.add(user)
        try:
            # A savepoint, so a lost race on the unique email leaves the transaction usable.
            async with self._session.begin_nested():
                await self._session.flush()
        except IntegrityError as exc:
            raise EmailTaken(email) from exc
        return user

    async def user_by_email(self, email: str) -> User | None:
        return await self._session.scalar(select(User).where(User.email == email))

    async def active_user(self, user_id: uuid.UUID) -> User | None:
        return await self._session.scalar(
            select(User).where(User.id == user_id, User.disabled.is_(False))
        )

    async def set_password_hash(self, user: User, password_hash: str) -> None:
        user.password_hash = password_hash
        await self._session.flush()

    # -- refresh tokens -------------------------------------------------------------------

    async def add_refresh_token(
        self, jti: uuid.UUID, user_id: uuid.UUID, expires_at: datetime
    ) -> None:
        now = datetime.now(UTC)
        # Expired rows are dead weight; drop this user's while we are here.
        await self._session.execute(
            delete(RefreshToken).where(
                RefreshToken.user_id == user_id, RefreshToken.expires_at < now
            )
        )
        self._session.add(
            RefreshToken(jti=jti, user_id=user_id, created_at=now, expires_at=expires_at)
        )
        await self._session.flush()

    async def use_refresh_token(self, jti: uuid.UUID, user_id: uuid.UUID) -> bool:
        """Revoke the token if it is live; one UPDATE, so two concurrent uses cannot both win."""
        now = datetime.now(UTC)
        result = await self._session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.jti == jti,
                RefreshToken.user_id == user_id,
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > now,
            )
            .values(revoked_at=now)
            .returning(RefreshToken.jti)
        )
        return result.first() is not None

    # -- API keys -------------------------------------------------------------------------

    async def add_api_key(
        self,
        user: User,
        name: str,
        prefix: str,
        key_hash: str,
        scopes: list[str],
        expires_at: datetime | None,
    ) -> ApiKey:
        api_key = ApiKey(
            id=uuid.uuid4(),
            user_id=user.id,
            tenant_id=user.tenant_id,
            name=name,
            prefix=prefix,
            key_hash=key_hash,
            scopes=scopes,
            expires_at=expires_at,
            created_at=datetime.now(UTC),
        )
        self._session.add(api_key)
        await self._session.flush()
        return api_key

    async def api_keys_of(self, user_id: uuid.UUID) -> list[ApiKey]:
        result = await self._session.scalars(
            select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc())
        )
        return list(result)

    async def revoke_api_key(self, user_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        """False when the user has no such key; revoking a revoked key changes nothing."""
        api_key = await self._session.scalar(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id)
        )
        if api_key is None:
            return False
        if api_key.revoked_at is None:
            api_key.revoked_at = datetime.now(UTC)
            await self._session.flush()
        return True

    async def live_api_key(self, key_hash: str) -> tuple[ApiKey, User] | None:
        """The key with this hash, unless it is revoked or expired or its user disabled;
        marks it used."""
        now = datetime.now(UTC)
        row = (
            await self._session.execute(
                select(ApiKey, User)
                .join(User, User.id == ApiKey.user_id)
                .where(
                    ApiKey.key_hash == key_hash,
                    ApiKey.revoked_at.is_(None),
                    or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
                    User.disabled.is_(False),
                )
            )
        ).first()
        if row is None:
            return None
        api_key, user = row
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            api_key.last_used_at = now
            await self._session.flush()
        return api_key, user
