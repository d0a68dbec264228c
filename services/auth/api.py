"""HTTP routes of the auth service: accounts, tokens, API keys and the public signing key."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Response, status

from services.auth.models import User
from services.auth.schemas import (
    EMAIL_MAX_LENGTH,
    PASSWORD_MAX_LENGTH,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    Me,
    Refresh,
    Register,
    TokenOut,
    UserOut,
)
from services.auth.service import AuthComponents, AuthService
from services.auth.state import AuthContextDep
from services.auth.tokens import TokenPair
from shared.security import API_SCOPES, CurrentPrincipal
from shared.service_app import UnitOfWorkDep

router = APIRouter(prefix="/auth", tags=["auth"])
jwks_router = APIRouter(tags=["auth"])

JWKS_MAX_AGE_S = 60


def get_components(context: AuthContextDep) -> AuthComponents:
    return context.state


ComponentsDep = Annotated[AuthComponents, Depends(get_components)]


def _service(uow: UnitOfWorkDep, components: ComponentsDep) -> AuthService:
    return AuthService(uow.session, components)


ServiceDep = Annotated[AuthService, Depends(_service)]


async def _current_user(service: ServiceDep, principal: CurrentPrincipal) -> User:
    return await service.user_for(principal)


CurrentUser = Annotated[User, Depends(_current_user)]


def _token_response(pair: TokenPair, response: Response) -> TokenOut:
    # RFC 6749 5.1: responses carrying tokens must not be cached.
    response.headers["Cache-Control"] = "no-store"
    return TokenOut(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
    )


@router.post("/register", response_model=UserOut, status_code=status.HTTP_201_CREATED)
async def register(body: Register, service: ServiceDep) -> UserOut:
    """Create an account; its tenant is new (named by `tenant`, or generated)."""
    user = await service.register(body.email, body.password, body.tenant)
    return UserOut.model_validate(user, from_attributes=True)


@router.post("/token", response_model=TokenOut)
async def token(
    username: Annotated[str, Form(max_length=EMAIL_MAX_LENGTH, description="The email.")],
    password: Annotated[str, Form(max_length=PASSWORD_MAX_LENGTH)],
    service: ServiceDep,
    response: Response,
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
) -> TokenOut:
    """Log in with the OAuth2 password form; returns an access and a refresh token."""
    pair = await service.login(username.lower(), password)
    return _token_response(pair, response)


@router.post("/refresh", response_model=TokenOut)
async def refresh(body: Refresh, service: ServiceDep, response: Response) -> TokenOut:
    """Trade a refresh token (usable once) for a new access and refresh token."""
    return _token_response(await service.refresh(body.refresh_token), response)


@router.get("/me", response_model=Me)
async def me(user: CurrentUser, principal: CurrentPrincipal) -> Me:
    """The account behind the bearer JWT or API key (services verify API keys here)."""
    kind: Literal["user", "api_key"] = "api_key" if principal.kind == "api_key" else "user"
    scopes = [scope for scope in API_SCOPES if scope in principal.scopes]
    return Me(id=user.id, email=user.email, tenant_id=user.tenant_id, kind=kind, scopes=scopes)


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def create_api_key(
    body: ApiKeyCreate,
    user: CurrentUser,
    principal: CurrentPrincipal,
    service: ServiceDep,
    response: Response,
) -> ApiKeyCreated:
    """Create an API key for the caller, limited to `scopes` and, with `expires_in_days`,
    in time; the key is in this response only. A key cannot grant what its maker's own
    credential lacks."""
    for scope in body.scopes:
        principal.require(scope)
    api_key, key = await service.create_api_key(
        user, body.name, list(body.scopes), body.expires_in_days
    )
    response.headers["Cache-Control"] = "no-store"
    return ApiKeyCreated(
        id=api_key.id,
        name=api_key.name,
        key=key,
        prefix=api_key.prefix,
        scopes=body.scopes,
        created_at=api_key.created_at,
        expires_at=api_key.expires_at,
    )


@router.get("/api-keys", response_model=list[ApiKeyOut])
async def list_api_keys(user: CurrentUser, service: ServiceDep) -> list[ApiKeyOut]:
    """The caller's API keys, newest first, revoked ones included (never the secrets)."""
    return [ApiKeyOut.model_validate(k, from_attributes=True) for k in await service.api_keys(user)]


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(key_id: uuid.UUID, user: CurrentUser, service: ServiceDep) -> Response:
    """Revoke one of the caller's API keys (other services notice within their 60 s cache)."""
    await service.revoke_api_key(user, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@jwks_router.get("/.well-known/jwks.json")
async def jwks(components: ComponentsDep, response: Response) -> dict[str, object]:
    """The public key that verifies Nexus JWTs, as a JSON Web Key Set."""
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_S}"
    return components.signing_key.jwks()
