"""What every command shares: its options, one API call with its output, and failing cleanly."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console, RenderableType
from rich.text import Text

from aigrid.cli.client import AdminClient, CLIError, connect

_PIPED_WIDTH = 160

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer and nothing else.")]
Tenant = Annotated[str, typer.Option("--tenant", help="The tenant's name.")]
TenantFilter = Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")]


def fail(message: str, exit_code: int) -> NoReturn:
    """Say what went wrong on stderr and exit with ``exit_code``."""
    Console(stderr=True).print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(exit_code)


def console() -> Console:
    """The terminal's width on a terminal; piped or redirected, tables are not squeezed to 80 columns."""
    terminal = Console()
    if not terminal.is_terminal and "COLUMNS" not in os.environ:
        terminal = Console(width=_PIPED_WIDTH)
    return terminal


def call(
    as_json: bool,
    request: Callable[[AdminClient], dict[str, Any]],
    show: Callable[[dict[str, Any]], RenderableType],
) -> None:
    """Make one API call and print its answer as JSON or through `show`; report failures, no traceback."""
    try:
        with connect() as admin:
            result = request(admin)
    except CLIError as exc:
        fail(exc.message, exc.exit_code)
    out = console()
    if as_json:
        out.out(json.dumps(result, indent=2, ensure_ascii=False), highlight=False)
    else:
        out.print(show(result))
