"""`nexus up`, `down`, `restart`, `status`: the local stack."""

from __future__ import annotations

import typer
from rich.table import Table

from cli.output import console, fail, friendly_errors
from cli.stack import (
    SERVICE_NAMES,
    StackInfo,
    resolve_home,
    restart,
    stack_status,
    start_stack,
    stop_stack,
)
from cli.stack.status import redact


def _services_table(info: StackInfo) -> Table:
    table = Table(title=f"Nexus stack ({info.home})")
    for column in ("component", "pid", "url"):
        table.add_column(column)
    for name, url in (("nats", info.nats_url), ("postgres", info.database_url)):
        record = info.process(name)
        table.add_row(name, str(record.pid) if record else "external", redact(url))
    for name, url in info.services.items():
        record = info.process(name)
        table.add_row(name, str(record.pid) if record else "", url)
    return table


def bring_up(timeout: float, keep_on_failure: bool = False) -> StackInfo:
    """Start the stack (or find it running) and print what happened; used by `demo` too."""
    home = resolve_home()
    try:
        info = start_stack(
            home.root,
            timeout=timeout,
            keep_on_failure=keep_on_failure,
            report=lambda line: console.print(f"  {line}", highlight=False),
        )
    except KeyboardInterrupt:
        raise fail("interrupted; everything started so far was stopped") from None
    if info.already_running:
        console.print(f"[yellow]already running:[/] the stack under {home.root}")
        console.print(_services_table(info))
        return info
    console.print(_services_table(info))
    console.print(f"[bold green]stack up in {info.timings['total']:.2f}s[/]")
    return info


@friendly_errors
def up(
    timeout: float = typer.Option(120.0, help="Seconds to wait for every /readyz."),
    keep_on_failure: bool = typer.Option(
        False, help="Leave processes running when start-up fails (to debug them)."
    ),
) -> None:
    """Start the local stack: NATS, Postgres, migrations and the six services."""
    bring_up(timeout, keep_on_failure)


@friendly_errors
def down() -> None:
    """Stop every process `nexus up` started (and nothing else)."""
    home = resolve_home()
    stopped = stop_stack(home.root)
    if stopped:
        console.print(f"stopped: {', '.join(stopped)}")
    else:
        console.print(f"no running stack under {home.root}")


@friendly_errors
def restart_component(
    name: str = typer.Argument(
        ..., help=f"nats, postgres, or a service: {', '.join(SERVICE_NAMES)}"
    ),
    timeout: float = typer.Option(60.0, help="Seconds to wait for its /readyz."),
) -> None:
    """Start one component of the running stack again (after it crashed, or to pick up a
    change); workflows in flight go on once it is back."""
    record = restart(name, resolve_home().root, timeout)
    console.print(f"{name} restarted (pid {record.pid})")


@friendly_errors
def status() -> None:
    """Show each component: pid, alive?, URL and its /readyz answer. Exit 1 unless healthy."""
    home = resolve_home()
    rows = stack_status(home)
    if not rows:
        console.print(f"no stack started under {home.root} (run `nexus up`)")
        raise typer.Exit(1)
    table = Table(title=f"Nexus stack ({home.root})")
    for column in ("component", "pid", "alive", "url", "/readyz"):
        table.add_column(column)
    healthy = True
    for row in rows:
        ok = row.alive and row.ready in ("200", "listening", "running", "external")
        healthy = healthy and ok
        table.add_row(
            row.name,
            str(row.pid) if row.pid else "-",
            "[green]yes[/]" if row.alive else "[red]no[/]",
            row.url,
            f"[green]{row.ready}[/]" if ok else f"[red]{row.ready}[/]",
        )
    console.print(table)
    if not healthy:
        raise typer.Exit(1)
