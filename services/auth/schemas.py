import re
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.security import API_SCOPES, ApiScope

TENANT_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
EMAIL_MAX_LENGTH = 254
PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 128
MAX_KEY_DAYS = 3650

# A practical subset of RFC 5321: dot-atom local part, and a domain of at least two labels.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EMAIL = re.compile(
    r"^(?=[^@]{1,64}@)[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    rf"@{_LABEL}(?:\.{_LABEL})+$"
)


def normalize_email(value: str) -> str:
    email = value.lower()
    if not _EMAIL.match(email):
        raise ValueError("not a valid email address")
    return email


class Register(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=EMAIL_MAX_LENGTH, examples=["ada@example.com"])
    password: str = Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)
    tenant: str | None = Field(
        default=None,
        pattern=TENANT_PATTERN,
        description="A new tenant's slug; a fresh t-<hex> id when omitted.",
    )

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str) -> str:
        return normalize_email(value)


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    tenant_id: str


class Me(UserOut):
    kind: Literal["user", "api_key"] = Field(description="How the caller authenticated.")
    scopes: list[ApiScope] = Field(description="What the credential may do.")


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")


class Refresh(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=4096)


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    scopes: list[ApiScope] = Field(
        default_factory=lambda: list(API_SCOPES),
        min_length=1,
        description="What the key may do; every scope when omitted. `models:predict` alone "
        "suits a client of served models.",
    )
    expires_in_days: int | None = Field(
        default=None, ge=1, le=MAX_KEY_DAYS, description="Days until the key stops working."
    )

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value.strip()

    @field_validator("scopes")
    @classmethod
    def _each_once(cls, scopes: list[ApiScope]) -> list[ApiScope]:
        if len(set(scopes)) != len(scopes):
            raise ValueError("a scope is listed twice")
        return sorted(scopes)


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    scopes: list[ApiScope]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(BaseModel):
    id: uuid.UUID
    name: str
    key: str = Field(description="The API key itself. Shown only now; store it safely.")
    prefix: str
    scopes: list[ApiScope]
    created_at: datetime
    expires_at: datetime | None
