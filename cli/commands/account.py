"""`nexus register` and `nexus login`."""

from __future__ import annotations

import typer

from cli.client import NexusClient
from cli.credentials import Credentials
from cli.output import console, friendly_errors
from cli.stack import resolve_home


def client() -> NexusClient:
    return NexusClient(resolve_home())


def log_in(api: NexusClient, email: str, password: str) -> Credentials:
    creds = api.login(email, password)
    console.print(f"logged in as {email}; token cached in {api.home.credentials_file}")
    return creds


@friendly_errors
def register(
    email: str = typer.Argument(..., help="Account e-mail."),
    password: str | None = typer.Option(None, help="Prompted (hidden) when omitted."),
) -> None:
    """Create an account (a new tenant) on the auth service."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with client() as api:
        user = api.register(email, password)
    console.print(
        f"registered {user.get('email')} (id {user.get('id')}, tenant {user.get('tenant_id')})"
    )


@friendly_errors
def login(
    email: str = typer.Argument(..., help="Account e-mail."),
    password: str | None = typer.Option(None, help="Prompted (hidden) when omitted."),
) -> None:
    """Log in and cache the tokens under NEXUS_HOME (mode 0600)."""
    if password is None:
        password = typer.prompt("Password", hide_input=True)
    with client() as api:
        log_in(api, email, password)
