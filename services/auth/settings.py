from pathlib import Path

from pydantic import AliasChoices, Field

from shared.settings import SERVICE_PORTS, ServiceSettings


class AuthSettings(ServiceSettings):
    port: int = Field(
        default=SERVICE_PORTS["auth"], validation_alias=AliasChoices("NEXUS_AUTH_PORT")
    )
    # An Ed25519 private key (PKCS8 PEM). Unset: $NEXUS_HOME/secrets/jwt-signing-key.pem,
    # generated on first start outside production.
    jwt_signing_key_file: Path | None = None
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=1, le=24 * 3600)
    refresh_token_ttl_seconds: int = Field(default=14 * 24 * 3600, ge=60, le=365 * 24 * 3600)
