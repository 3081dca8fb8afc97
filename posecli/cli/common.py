"""What every command shares: the console, and turning user errors into a message and exit 1."""

from __future__ import annotations

import functools
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from posecli.devices import device_problem
from posecli.errors import UserError

console = Console(stderr=True)
out = Console()


def user_errors(fn: Callable) -> Callable:
    """Print a ``UserError`` (and unreadable files) as one red line, exit 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)  # "[x, y, w, h]" is no markup
            raise typer.Exit(1) from None
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            console.print(f"[bold red]error:[/] {e.strerror}: {e.filename}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def device_option(value: str | None, flag: str = "--device") -> str | None:
    """The shared device check of every command: ``--device gpu`` fails here, in seconds, listing the valid names."""
    problem = device_problem(value)
    if problem:
        raise UserError(f"{flag} {value}: {problem}")
    return value


def not_yet(issue: str) -> None:
    console.print(f"[yellow]not implemented yet[/] (tracked as: {issue})")
    raise typer.Exit(2)
