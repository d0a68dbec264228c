"""The JWTs: verifiable from the JWKS alone, refresh tokens that work once, expiry, forgeries."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from shared.security import JWT_ALGORITHM, JWT_AUDIENCE, JWT_ISSUER, TokenVerifier
from tests.services.auth.conftest import bearer, login, register


async def test_jwks_verifies_the_access_token_with_pyjwt(
    client: httpx.AsyncClient, email: str
) -> None:
    user = await register(client, email)
    tokens = await login(client, email)

    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    (jwk,) = response.json()["keys"]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["alg"] == "EdDSA"
    assert "d" not in jwk  # never the private part
    assert jwt.get_unverified_header(tokens["access_token"])["kid"] == jwk["kid"]

    claims = jwt.decode(
        tokens["access_token"],
        jwt.PyJWK.from_dict(jwk).key,
        algorithms=["EdDSA"],
        audience="nexus",
        issuer="nexus-auth",
    )
    assert claims["sub"] == user["id"]
    assert claims["tenant"] == user["tenant_id"]
    assert claims["type"] == "access"
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert uuid.UUID(claims["jti"])


async def test_other_services_verify_tokens_from_the_jwks(
    client: httpx.AsyncClient, email: str
) -> None:
    """What every other service does (shared.security.TokenVerifier fed by the JWKS)."""
    user = await register(client, email)
    tokens = await login(client, email)

    async def fetch_jwks() -> dict[str, Any]:
        body: dict[str, Any] = (await client.get("/.well-known/jwks.json")).json()
        return body

    principal = await TokenVerifier(fetch_jwks, None, None).verify(tokens["access_token"])
    assert (principal.subject, principal.tenant_id, principal.kind) == (
        user["id"],
        user["tenant_id"],
        "user",
    )


async def test_refresh_rotates_and_a_used_refresh_token_is_refused(
    client: httpx.AsyncClient, email: str
) -> None:
    await register(client, email)
    first = await login(client, email)

    rotated = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/auth/me", headers=bearer(second["access_token"]))).status_code == 200

    reused = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401
    assert reused.json()["error"] == "unauthorized"

    again = await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert again.status_code == 200


async def test_token_types_are_not_interchangeable(client: httpx.AsyncClient, email: str) -> None:
    await register(client, email)
    tokens = await login(client, email)
    as_access = await client.get("/auth/me", headers=bearer(tokens["refresh_token"]))
    assert as_access.status_code == 401
    as_refresh = await client.post("/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert as_refresh.status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "refresh_token"),
        ({"refresh_token": ""}, 422, "refresh_token"),
        ({"refresh_token": 5}, 422, "refresh_token"),
        ({"refresh_token": "not.a.jwt"}, 401, None),
    ],
)
async def test_bad_refresh_requests_are_refused(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, field: str | None
) -> None:
    response = await client.post("/auth/refresh", json=body)
    assert response.status_code == status
    assert set(response.json()) == {"error", "detail"}
    if field is not None:
        assert field in [d["field"] for d in response.json()["detail"]]


def _claims(user: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": user["id"],
        "tenant": user["tenant_id"],
        "type": "access",
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        **overrides,
    }


async def test_a_token_signed_by_another_key_is_401(
    client: httpx.AsyncClient, auth_app: FastAPI, email: str
) -> None:
    user = await register(client, email)
    kid = auth_app.state.auth.signing_key.kid
    # Same kid and claims, but a key the service never had.
    forged = jwt.encode(
        _claims(user), Ed25519PrivateKey.generate(), algorithm=JWT_ALGORITHM, headers={"kid": kid}
    )
    response = await client.get("/auth/me", headers=bearer(forged))
    assert response.status_code == 401
    unknown_kid = jwt.encode(
        _claims(user), Ed25519PrivateKey.generate(), algorithm=JWT_ALGORITHM, headers={"kid": "x"}
    )
    assert (await client.get("/auth/me", headers=bearer(unknown_kid))).status_code == 401


async def test_an_expired_token_is_401(
    client: httpx.AsyncClient, auth_app: FastAPI, email: str
) -> None:
    user = await register(client, email)
    key = auth_app.state.auth.signing_key
    now = int(time.time())
    expired = jwt.encode(
        _claims(user, iat=now - 1000, exp=now - 100),
        key.private_key,
        algorithm=JWT_ALGORITHM,
        headers={"kid": key.kid},
    )
    response = await client.get("/auth/me", headers=bearer(expired))
    assert response.status_code == 401
    assert response.json()["detail"] == "token expired"

    # The same token, still valid, is accepted: the key and claims were right.
    valid = jwt.encode(
        _claims(user), key.private_key, algorithm=JWT_ALGORITHM, headers={"kid": key.kid}
    )
    assert (await client.get("/auth/me", headers=bearer(valid))).status_code == 200


async def test_an_expired_refresh_token_is_401(
    client: httpx.AsyncClient, auth_app: FastAPI, email: str
) -> None:
    user = await register(client, email)
    key = auth_app.state.auth.signing_key
    now = int(time.time())
    expired = jwt.encode(
        _claims(user, type="refresh", iat=now - 1000, exp=now - 100),
        key.private_key,
        algorithm=JWT_ALGORITHM,
        headers={"kid": key.kid},
    )
    response = await client.post("/auth/refresh", json={"refresh_token": expired})
    assert response.status_code == 401
    assert response.json()["detail"] == "refresh token expired"


async def test_a_well_signed_refresh_token_never_issued_is_401(
    client: httpx.AsyncClient, auth_app: FastAPI, email: str
) -> None:
    """Signature alone is not enough: the jti must be a live row."""
    user = await register(client, email)
    key = auth_app.state.auth.signing_key
    token = jwt.encode(
        _claims(user, type="refresh"),
        key.private_key,
        algorithm=JWT_ALGORITHM,
        headers={"kid": key.kid},
    )
    response = await client.post("/auth/refresh", json={"refresh_token": token})
    assert response.status_code == 401


async def test_concurrent_uses_of_one_refresh_token_succeed_once(
    client: httpx.AsyncClient, email: str
) -> None:
    await register(client, email)
    tokens = await login(client, email)
    body = {"refresh_token": tokens["refresh_token"]}
    first, second = await asyncio.gather(
        client.post("/auth/refresh", json=body), client.post("/auth/refresh", json=body)
    )
    assert sorted([first.status_code, second.status_code]) == [200, 401]
