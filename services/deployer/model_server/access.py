"""Who may ask a served model: a caller of the model's tenant with a bearer JWT, an API key
with the `models:predict` scope, or the platform's internal token acting for that tenant;
anyone at all only when the deployment is public. Health, readiness, metrics and the API
document stay open, for probes, Prometheus and people reading the docs.

A credential once verified is remembered, so the request path pays a dictionary lookup,
not a signature check or a call to the auth service: a JWT until it expires (it cannot be
revoked before), an API key for `API_KEY_REMEMBER_S` (a revoked key stops working within
that), at most `MAX_REMEMBERED` of them at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic_core import to_json
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.asgi import header
from shared.errors import Forbidden, Unauthorized, error_body
from shared.security import TENANT_HEADER, ApiScope, TokenVerifier, remote_verifier
from shared.settings import CredentialSettings

PREDICT_SCOPE: ApiScope = "models:predict"
OPEN_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/docs",
        "/docs/oauth2-redirect",
        "/openapi.json",
        "/v2/health/live",
        "/v2/health/ready",
    }
)
API_KEY_REMEMBER_S = 2.0
MAX_REMEMBERED = 10_000
_AUTHORIZATION = b"authorization"
_TENANT = TENANT_HEADER.lower().encode()


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str
    message: str


class ModelAccess:
    """Checks the credentials of requests to the model of `tenant_id`."""

    def __init__(self, tenant_id: str, verifier: TokenVerifier) -> None:
        self.tenant_id = tenant_id
        self._verifier = verifier
        self._remembered: dict[str, float] = {}  # credential -> when to verify it again

    @classmethod
    def from_environment(cls, tenant_id: str, auth_url: str | None = None) -> ModelAccess:
        """Verifying as the services do: JWKS and API keys from the auth service at
        `auth_url` (NEXUS_AUTH_URL), the internal token from NEXUS_INTERNAL_TOKEN(_FILE)."""
        settings = CredentialSettings()
        url = auth_url or settings.auth_url
        # Answers are remembered here, per credential, not again in the verifier.
        verifier = remote_verifier(url, settings.internal_token_or_none(), api_key_cache_seconds=0)
        return cls(tenant_id, verifier)

    def describe(self) -> str:
        return f"callers of tenant {self.tenant_id!r}: bearer token or {PREDICT_SCOPE!r} API key"

    async def refusal(self, scope: Scope) -> Refusal | None:
        """None when the request may go on; otherwise why not."""
        authorization = header(scope, _AUTHORIZATION) or ""
        kind, _, token = authorization.partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            return Refusal(401, "unauthorized", "send 'Authorization: Bearer <token or API key>'")
        now = time.time()
        if self._remembered.get(token, 0.0) > now:
            return None
        try:
            principal = await self._verifier.verify(token, header(scope, _TENANT))
        except Unauthorized as exc:
            return Refusal(401, "unauthorized", str(exc.detail))
        except httpx.HTTPError:
            return Refusal(503, "unavailable", "credentials cannot be checked right now")
        if principal.tenant_id != self.tenant_id:
            return Refusal(403, "forbidden", "this model belongs to another tenant")
        try:
            principal.require(PREDICT_SCOPE)
        except Forbidden as exc:
            return Refusal(403, "forbidden", str(exc.detail))
        if principal.kind != "service":  # the internal token is checked anew: a compare
            self._remember(token, principal.kind, principal.expires_at, now)
        return None

    def _remember(self, token: str, kind: str, expires_at: float | None, now: float) -> None:
        if len(self._remembered) >= MAX_REMEMBERED:
            self._remembered.clear()
        if kind == "api_key":
            self._remembered[token] = now + API_KEY_REMEMBER_S
        elif expires_at is not None:
            self._remembered[token] = expires_at


class RequireCredential:
    """ASGI middleware refusing what `access` refuses (None: a public model, all may ask).
    Refusals on the Open Inference Protocol's paths are `{"error": message}`, as it says."""

    def __init__(self, app: ASGIApp, access: ModelAccess | None) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.access is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        refusal = await self.access.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        body: Any = error_body(refusal.error, refusal.message)
        if scope["path"].startswith("/v2/"):
            body = {"error": refusal.message}
        payload = to_json(body)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        if refusal.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
