"""What checking a served model's caller costs per request: `ModelAccess.refusal` (the check
the model server runs ahead of every predict request) timed in this process, for

- a bearer JWT the server has seen (remembered until it expires): the common case;
- a bearer JWT seen for the first time: its Ed25519 signature and claims checked;
- an API key the server has seen (remembered 2 s; then one call to the auth service);
- the platform's internal token (compared each time);

against reading the header alone, the least any check must do.

    .venv/bin/python -m bench.credential_check [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auth.keys import SigningKey
from services.auth.tokens import TokenIssuer
from services.deployer.model_server.access import ModelAccess
from shared.asgi import header
from shared.security import Principal, TokenVerifier

TENANT = "bench"
INTERNAL = "internal-" + uuid.uuid4().hex


def scope_of(token: str, tenant: str | None = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    headers.append((b"authorization", f"Bearer {token}".encode()))
    if tenant:
        headers.append((b"x-nexus-tenant", tenant.encode()))
    return {"type": "http", "headers": headers}


async def per_call_us(check: Callable[[], Awaitable[object]], requests: int) -> float:
    """Median of 5 rounds of the mean time of one call, in µs."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(requests):
            await check()
        rounds.append((time.perf_counter() - started) / requests * 1e6)
    return statistics.median(rounds)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()

    signing_key = SigningKey.from_private_key(Ed25519PrivateKey.generate())
    issuer = TokenIssuer(signing_key, timedelta(hours=1), timedelta(hours=1))

    async def jwks() -> dict[str, Any]:
        return signing_key.jwks()

    async def api_key_owner(key: str) -> Principal:
        return Principal(TENANT, str(uuid.uuid4()), "api_key", frozenset({"models:predict"}))

    access = ModelAccess(TENANT, TokenVerifier(jwks, api_key_owner, INTERNAL))
    token = issuer.issue_pair(uuid.uuid4(), TENANT).access_token
    fresh = [issuer.issue_pair(uuid.uuid4(), TENANT).access_token for _ in range(2000)]
    key = "nxk_" + uuid.uuid4().hex
    jwt_scope, key_scope = scope_of(token), scope_of(key)
    internal_scope = scope_of(INTERNAL, TENANT)
    for scope in (jwt_scope, key_scope, internal_scope):
        assert await access.refusal(scope) is None  # accepted (and remembered)
    unseen = iter(scope_of(t) for t in fresh)

    async def header_only() -> object:
        return header(jwt_scope, b"authorization")

    async def first_sight() -> object:
        return await access.refusal(next(unseen))

    baseline = await per_call_us(header_only, args.requests)
    figures = {
        "JWT, remembered": await per_call_us(lambda: access.refusal(jwt_scope), args.requests),
        "API key, remembered": await per_call_us(lambda: access.refusal(key_scope), args.requests),
        "internal token": await per_call_us(lambda: access.refusal(internal_scope), args.requests),
    }
    signature_us = await per_call_us(first_sight, len(fresh) // 5)
    print(f"credential check per request, median of 5 rounds of {args.requests:,} calls")
    print(f"{'reading the header (baseline)':<32} {baseline:8.2f} us")
    for name, us in figures.items():
        print(f"{name:<32} {us:8.2f} us  ({us / baseline:.1f}x the baseline)")
    print(f"{'JWT, first sight (signature)':<32} {signature_us:8.2f} us  (once per token)")


if __name__ == "__main__":
    asyncio.run(main())
