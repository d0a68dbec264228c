"""Minting and reading the JWTs: short-lived access tokens every service accepts, and
refresh tokens only the auth service reads (each one used once, tracked by its jti)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt

from services.auth.keys import SigningKey
from shared.errors import Unauthorized
from shared.security import JWT_ALGORITHM, JWT_AUDIENCE, JWT_ISSUER

TokenType = Literal["access", "refresh"]


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    refresh_jti: uuid.UUID
    refresh_expires_at: datetime
    expires_in: int


@dataclass(frozen=True)
class RefreshClaims:
    user_id: uuid.UUID
    jti: uuid.UUID


class TokenIssuer:
    def __init__(self, key: SigningKey, access_ttl: timedelta, refresh_ttl: timedelta) -> None:
        self._key = key
        self._access_ttl = access_ttl
        self._refresh_ttl = refresh_ttl

    def issue_pair(self, user_id: uuid.UUID, tenant_id: str) -> TokenPair:
        now = datetime.now(UTC)
        refresh_jti = uuid.uuid4()
        refresh_expires_at = now + self._refresh_ttl
        return TokenPair(
            access_token=self._encode(
                user_id, tenant_id, "access", uuid.uuid4(), now, now + self._access_ttl
            ),
            refresh_token=self._encode(
                user_id, tenant_id, "refresh", refresh_jti, now, refresh_expires_at
            ),
            refresh_jti=refresh_jti,
            refresh_expires_at=refresh_expires_at,
            expires_in=int(self._access_ttl.total_seconds()),
        )

    def read_refresh(self, token: str) -> RefreshClaims:
        """Signature, issuer, audience, expiry and type; whether it was already used is the
        database's to say."""
        try:
            claims = jwt.decode(
                token,
                self._key.public_key,
                algorithms=[JWT_ALGORITHM],
                audience=JWT_AUDIENCE,
                issuer=JWT_ISSUER,
                options={"require": ["exp", "sub", "jti", "tenant", "type"]},
            )
            if claims["type"] != "refresh":
                raise Unauthorized("not a refresh token")
            return RefreshClaims(user_id=uuid.UUID(claims["sub"]), jti=uuid.UUID(claims["jti"]))
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("refresh token expired") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthorized(f"invalid refresh token: {exc}") from exc

    def _encode(
        self,
        user_id: uuid.UUID,
        tenant_id: str,
        token_type: TokenType,
        jti: uuid.UUID,
        issued_at: datetime,
        expires_at: datetime,
    ) -> str:
        claims = {
            "iss": JWT_ISSUER,
            "aud": JWT_AUDIENCE,
            "sub": str(user_id),
            "tenant": tenant_id,
            "type": token_type,
            "iat": int(issued_at.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": str(jti),
        }
        return jwt.encode(
            claims, self._key.private_key, algorithm=JWT_ALGORITHM, headers={"kid": self._key.kid}
        )
