"""The consoles every command prints to, and one way of turning errors into exit status 1."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from cli.client import CliError
from cli.stack.errors import StackError

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str) -> typer.Exit:
    # The message may quote a log ("[INFO] ..."): escape it so rich does not read markup,
    # and soft-wrap so long log lines stay whole when copied.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Expected failures (service said no, stack cannot start, bad input) print one clear
    message and exit 1 instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (CliError, StackError, ValueError, OSError) as exc:
            raise fail(str(exc)) from exc

    return wrapper
