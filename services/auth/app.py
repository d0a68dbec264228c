from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from services.auth.api import jwks_router, router
from services.auth.keys import load_or_create_signing_key
from services.auth.models import Base
from services.auth.passwords import Passwords
from services.auth.service import AuthComponents, AuthService
from services.auth.settings import AuthSettings
from services.auth.state import AuthContext
from services.auth.tokens import TokenIssuer
from shared.security import Principal, TokenVerifier
from shared.service_app import create_service_app


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or AuthSettings.from_env()
    # Loaded (or generated) now, so a missing production key stops the service before it serves.
    signing_key = load_or_create_signing_key(settings)
    components = AuthComponents(
        signing_key=signing_key,
        issuer=TokenIssuer(
            signing_key,
            access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
            refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
        ),
        passwords=Passwords(),
    )

    def local_verifier(context: AuthContext) -> TokenVerifier:
        """Auth checks tokens against its own key and API keys against its own table, instead
        of calling itself over HTTP like every other service does."""

        async def own_jwks() -> dict[str, Any]:
            return signing_key.jwks()

        async def check_api_key(key: str) -> Principal | None:
            async with context.unit_of_work() as uow:
                return await AuthService(uow.session, components).principal_for_api_key(key)

        # API-key answers are not cached: they are local, and a revoked key must stop at once.
        return TokenVerifier(
            own_jwks, check_api_key, settings.internal_token_or_none(), api_key_cache_seconds=0
        )

    async def warm_up(context: AuthContext) -> None:
        await context.state.passwords.prepare()

    app = create_service_app(
        "auth",
        settings,
        Base.metadata,
        [router, jwks_router],
        description="Accounts, EdDSA-signed JWTs (published as JWKS), refresh rotation, API keys.",
        token_verifier=local_verifier,
        state_factory=lambda _: components,
        on_startup=warm_up,
    )
    # Tests and tools read the signing key before the app has started.
    app.state.auth = components
    return app
