"""A served model answers only its tenant: a bearer token of that tenant, an API key with the
`models:predict` scope, or the platform's internal token acting for it; everyone else gets
401 or 403 in every protocol. A real model server process checks credentials against a real
auth service, as the deployer starts it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auth.app import create_app as create_auth_app
from services.auth.keys import SigningKey
from services.auth.settings import AuthSettings
from services.auth.tokens import TokenIssuer
from services.deployer.model_server.access import API_KEY_REMEMBER_S, ModelAccess
from shared.security import TokenVerifier
from tests.services.deployer.test_model_server import serve
from tests.support import as_service, serving

PASSWORD = "correct horse battery"
ROW = [0.0] * 64
PREDICT_CALLS = [
    ("/predict", {"rows": [ROW]}),
    ("/v1/models/model:predict", {"instances": [ROW]}),
    (
        "/v2/models/model/infer",
        {"inputs": [{"name": "rows", "shape": [1, 64], "datatype": "FP32", "data": ROW}]},
    ),
]


@pytest.fixture(scope="module")
async def auth_url(service_env: dict[str, str]) -> AsyncIterator[str]:
    async with serving(create_auth_app(AuthSettings())) as url:  # type: ignore[call-arg]
        yield url


async def _account(auth: httpx.AsyncClient) -> dict[str, Any]:
    """A new user of a new tenant: its id, tenant and an access token's headers."""
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    user = (await auth.post("/auth/register", json={"email": email, "password": PASSWORD})).json()
    login = await auth.post("/auth/token", data={"username": email, "password": PASSWORD})
    return {**user, "headers": {"Authorization": f"Bearer {login.json()['access_token']}"}}


async def _key(auth: httpx.AsyncClient, owner: dict[str, Any], *scopes: str) -> dict[str, Any]:
    body = {"name": "client", "scopes": list(scopes)}
    created = await auth.post("/auth/api-keys", json=body, headers=owner["headers"])
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()
    return {**key, "headers": {"Authorization": f"Bearer {key['key']}"}}


@pytest.fixture(scope="module")
async def auth(auth_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=auth_url, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
async def owner(auth: httpx.AsyncClient) -> dict[str, Any]:
    return await _account(auth)


@pytest.fixture(scope="module")
def server(
    owner: dict[str, Any],
    auth_url: str,
    digits_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    yield from serve(
        digits_model_dir, tmp_path_factory, "--tenant", owner["tenant_id"], "--auth-url", auth_url
    )


@pytest.fixture
async def model(server: str) -> AsyncIterator[httpx.AsyncClient]:
    # Async: the model server asks the auth service, which runs in this test's event loop.
    async with httpx.AsyncClient(base_url=server, trust_env=False, timeout=10) as client:
        yield client


async def test_no_or_bad_credentials_are_401_in_every_protocol(
    model: httpx.AsyncClient,
) -> None:
    for authorization in (None, "Bearer not-a-token", "Bearer nxk_" + "A" * 43, "Basic eDp5"):
        headers = {"Authorization": authorization} if authorization else {}
        for path, body in PREDICT_CALLS:
            answer = await model.post(path, json=body, headers=headers)
            assert answer.status_code == 401, (path, authorization, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert isinstance(answer.json()["error"], str)
        for path in ("/", "/v2/models/model", "/v2/models/model/ready"):
            assert (await model.get(path, headers=headers)).status_code == 401, path
    detail = (await model.post("/predict", json={"rows": [ROW]})).json()["detail"]
    assert "Authorization: Bearer" in detail
    v2 = (await model.post(PREDICT_CALLS[2][0], json=PREDICT_CALLS[2][1])).json()
    assert set(v2) == {"error"}  # the Open Inference Protocol's error shape


async def test_probes_metrics_and_docs_need_no_credentials(model: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"):
        assert (await model.get(path)).status_code == 200, path
    assert (await model.get("/openapi.json")).status_code == 200
    assert (await model.get("/docs")).status_code == 200


async def test_the_tenant_asks_by_token_predict_key_or_as_the_platform(
    model: httpx.AsyncClient,
    auth: httpx.AsyncClient,
    owner: dict[str, Any],
    internal_token: str,
) -> None:
    predict_key = await _key(auth, owner, "models:predict")
    platform = as_service(internal_token, owner["tenant_id"])
    for headers in (owner["headers"], predict_key["headers"], platform):
        for path, body in PREDICT_CALLS:
            answer = await model.post(path, json=body, headers=headers)
            assert answer.status_code == 200, (path, answer.text)
    info = (await model.get("/", headers=owner["headers"])).json()
    assert owner["tenant_id"] in info["access"]


async def test_other_tenants_and_keys_without_the_scope_are_403(
    model: httpx.AsyncClient,
    auth: httpx.AsyncClient,
    owner: dict[str, Any],
    internal_token: str,
) -> None:
    stranger = await _account(auth)
    reader = await _key(auth, owner, "workflows:read", "memory:write")
    strangers_key = await _key(auth, stranger, "models:predict")
    as_stranger = as_service(internal_token, stranger["tenant_id"])
    for headers, says in (
        (stranger["headers"], "another tenant"),
        (strangers_key["headers"], "another tenant"),
        (as_stranger, "another tenant"),
        (reader["headers"], "models:predict"),
    ):
        answer = await model.post("/predict", json={"rows": [ROW]}, headers=headers)
        assert answer.status_code == 403 and says in answer.json()["detail"], answer.text


async def test_a_revoked_key_is_refused_within_seconds(
    model: httpx.AsyncClient, auth: httpx.AsyncClient, owner: dict[str, Any]
) -> None:
    key = await _key(auth, owner, "models:predict")
    assert (await model.post("/predict", json={"rows": [ROW]}, headers=key["headers"])).is_success
    revoked = await auth.delete(f"/auth/api-keys/{key['id']}", headers=owner["headers"])
    assert revoked.status_code == 204
    started = time.monotonic()
    while True:
        answer = await model.post("/predict", json={"rows": [ROW]}, headers=key["headers"])
        if answer.status_code == 401:
            break
        assert answer.status_code == 200 and time.monotonic() - started < 10
        await asyncio.sleep(0.1)
    assert time.monotonic() - started <= API_KEY_REMEMBER_S + 1.0


def _scope(token: str) -> dict[str, Any]:
    return {"type": "http", "headers": [(b"authorization", f"Bearer {token}".encode())]}


async def test_a_verified_token_is_remembered_until_it_expires() -> None:
    signing_key = SigningKey.from_private_key(Ed25519PrivateKey.generate())
    fetched = []

    async def jwks() -> dict[str, Any]:
        fetched.append(1)
        return signing_key.jwks()

    verifier = TokenVerifier(jwks, None, None)
    verified = []
    verify = verifier.verify

    async def counting(token: str, acting_tenant: str | None = None) -> Any:
        verified.append(token)
        return await verify(token, acting_tenant)

    verifier.verify = counting  # type: ignore[method-assign]
    access = ModelAccess("t-one", verifier)
    issuer = TokenIssuer(signing_key, timedelta(seconds=2), timedelta(days=1))
    token = issuer.issue_pair(uuid.uuid4(), "t-one").access_token

    for _ in range(100):
        assert await access.refusal(_scope(token)) is None
    assert len(verified) == 1 and len(fetched) == 1  # one signature check for them all

    await asyncio.sleep(2.1)  # the token expired: checked again, and refused
    refusal = await access.refusal(_scope(token))
    assert refusal is not None and refusal.status == 401 and "expired" in refusal.message
    assert len(verified) == 2
