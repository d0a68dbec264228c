"""`nexus secrets init DIR`: generate a deployment's secrets once (used by docker compose)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.stack.secrets import init_secret_dir

app = typer.Typer(help="Deployment secrets.", no_args_is_help=True)


@app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the secret files.")],
    owner: Annotated[
        str | None, typer.Option(help="User that must own the files (the services' user).")
    ] = None,
) -> None:
    """Create the internal token, JWT signing key and Postgres password if missing (0600)."""
    for path in init_secret_dir(directory, owner):
        typer.echo(f"{path} ready")
