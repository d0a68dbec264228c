"""Who is calling: bearer JWTs signed by the auth service (checked against its JWKS),
API keys (checked by the auth service), and the internal token services use between
themselves (which names the tenant it acts for in `X-Nexus-Tenant`)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import httpx
import jwt
from fastapi import Depends, Request

from shared.errors import Forbidden, Unauthorized

JWT_ISSUER = "nexus-auth"
JWT_AUDIENCE = "nexus"
JWT_ALGORITHM = "EdDSA"
API_KEY_PREFIX = "nxk_"
TENANT_HEADER = "X-Nexus-Tenant"

JwksSource = Callable[[], Awaitable[dict[str, Any]]]
ApiKeyChecker = Callable[[str], Awaitable["Principal | None"]]

# What an API key may be limited to; a signed-in user and a service may do all of it.
ApiScope = Literal["workflows:read", "workflows:write", "models:predict", "memory:write"]
API_SCOPES: tuple[ApiScope, ...] = get_args(ApiScope)
ALL_SCOPES = frozenset(API_SCOPES)


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    subject: str
    kind: Literal["user", "api_key", "service"]
    scopes: frozenset[str] = ALL_SCOPES
    # When the credential stops being valid (a JWT's `exp`, Unix time); None: not known.
    expires_at: float | None = None

    def require(self, scope: ApiScope) -> None:
        """Forbidden unless this caller's credential grants `scope`."""
        if scope not in self.scopes:
            raise Forbidden(f"this API key lacks the {scope!r} scope")


class TokenVerifier:
    """Verifies any credential Nexus accepts. JWKS and API-key answers are cached briefly so
    a request costs no extra round trip to the auth service in the common case."""

    def __init__(
        self,
        jwks_source: JwksSource,
        api_key_checker: ApiKeyChecker | None,
        internal_token: str | None,
        jwks_cache_seconds: float = 60.0,
        api_key_cache_seconds: float = 60.0,
    ) -> None:
        self._jwks_source = jwks_source
        self._api_key_checker = api_key_checker
        self._internal_token = internal_token
        self._jwks_cache_seconds = jwks_cache_seconds
        self._api_key_cache_seconds = api_key_cache_seconds
        self._keys: dict[str, Any] = {}
        self._keys_fetched_at = 0.0
        self._api_keys: dict[str, tuple[float, Principal]] = {}

    async def verify(self, token: str, acting_tenant: str | None = None) -> Principal:
        if not token:
            raise Unauthorized("missing bearer token")
        if self._internal_token and hmac.compare_digest(token, self._internal_token):
            if not acting_tenant:
                raise Unauthorized(f"internal calls must name a tenant in {TENANT_HEADER}")
            return Principal(tenant_id=acting_tenant, subject="service", kind="service")
        if token.startswith(API_KEY_PREFIX):
            return await self._verify_api_key(token)
        return await self._verify_jwt(token)

    async def _verify_api_key(self, key: str) -> Principal:
        cached = self._api_keys.get(key)
        if cached and time.monotonic() - cached[0] < self._api_key_cache_seconds:
            return cached[1]
        principal = await self._api_key_checker(key) if self._api_key_checker else None
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        self._api_keys[key] = (time.monotonic(), principal)
        return principal

    async def _signing_key(self, kid: str) -> Any:
        stale = time.monotonic() - self._keys_fetched_at > self._jwks_cache_seconds
        if kid not in self._keys or stale:
            jwks = await self._jwks_source()
            self._keys = {
                k["kid"]: jwt.PyJWK.from_dict(k).key for k in jwks.get("keys", []) if "kid" in k
            }
            self._keys_fetched_at = time.monotonic()
        if kid not in self._keys:
            raise Unauthorized("token signed by an unknown key")
        return self._keys[kid]

    async def _verify_jwt(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            key = await self._signing_key(str(header.get("kid", "")))
            claims = jwt.decode(
                token,
                key,
                algorithms=[JWT_ALGORITHM],
                audience=JWT_AUDIENCE,
                issuer=JWT_ISSUER,
                options={"require": ["exp", "sub", "tenant"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        if claims.get("type") != "access":
            raise Unauthorized("not an access token")
        tenant, subject = str(claims["tenant"]), str(claims["sub"])
        return Principal(tenant, subject, "user", expires_at=float(claims["exp"]))


def remote_verifier(
    auth_url: str, internal_token: str | None, **cache_seconds: float
) -> TokenVerifier:
    """A verifier for services other than auth: JWKS and API keys come from the auth service
    (`jwks_cache_seconds`, `api_key_cache_seconds`: how long their answers are kept)."""
    base = auth_url.rstrip("/")

    async def fetch_jwks() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"{base}/.well-known/jwks.json")
            response.raise_for_status()
            jwks: dict[str, Any] = response.json()
            return jwks

    async def check_api_key(key: str) -> Principal | None:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(
                f"{base}/auth/me", headers={"Authorization": f"Bearer {key}"}
            )
        if response.status_code != 200:
            return None
        body = response.json()
        scopes = frozenset(body.get("scopes", ())) & ALL_SCOPES
        return Principal(body["tenant_id"], body["id"], "api_key", scopes)

    return TokenVerifier(fetch_jwks, check_api_key, internal_token, **cache_seconds)


def bearer_token(request: Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    return token.strip()


async def current_principal(request: Request) -> Principal:
    verifier: TokenVerifier = request.app.state.token_verifier
    return await verifier.verify(bearer_token(request), request.headers.get(TENANT_HEADER))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def internal_headers(internal_token: str, tenant_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {internal_token}", TENANT_HEADER: tenant_id}
