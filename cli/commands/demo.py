"""`nexus demo`: from nothing to a served model in one command."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from cli.client import ApiError
from cli.commands.account import client, log_in
from cli.commands.stack import bring_up
from cli.commands.workflows import follow_to_end, submit
from cli.output import console, friendly_errors
from cli.stack import resolve_home
from cli.stack.lifecycle import REPO_ROOT
from cli.stack.secrets import demo_password

DEMO_EMAIL = "demo@nexus.local"
SPEC = Path("examples") / "digits.yaml"


def default_spec() -> Path:
    """examples/digits.yaml of the checkout; of the current folder when installed elsewhere."""
    beside_code = REPO_ROOT / SPEC
    return beside_code if beside_code.is_file() else Path.cwd() / SPEC


@friendly_errors
def demo(
    spec: Path | None = typer.Option(
        None, dir_okay=False, help="Workflow spec to run (default: examples/digits.yaml)."
    ),
    timeout: float = typer.Option(120.0, help="Seconds to wait for the stack to be ready."),
) -> None:
    """Start the stack, log in a demo user, run examples/digits.yaml and follow it."""
    spec = spec or default_spec()
    if not spec.is_file():
        raise ValueError(f"spec {spec} not found")
    started = time.monotonic()
    bring_up(timeout)
    password = demo_password(resolve_home())
    with client() as api:
        try:
            api.register(DEMO_EMAIL, password)
            console.print(f"registered {DEMO_EMAIL}")
        except ApiError as exc:
            if exc.status >= 500:
                raise
            # Already registered on an earlier run (typically 409); logging in settles it.
            console.print(f"{DEMO_EMAIL} already registered ({exc.status})")
        log_in(api, DEMO_EMAIL, password)
        requested = time.monotonic()
        workflow_id = submit(api, spec)
        follow_to_end(api, workflow_id)
        served = time.monotonic()
    # follow_to_end has printed the report's path and the served URL.
    console.print()
    console.print(f"[bold]request -> served model[/]  {served - requested:.1f}s")
    console.print(f"[bold]total (incl. stack start)[/] {served - started:.1f}s")
