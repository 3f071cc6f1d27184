"""What every command shares: its options, one API call with its output, and failing cleanly."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from aigrid.cli.client import AdminClient, CLIError, connect

_PIPED_WIDTH = 160


def client() -> AdminClient:
    """A client of the server the environment names (``connect`` is looked up at each call, so that
    tests can put a fake server behind it)."""
    return connect()


JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer and nothing else.")]
Tenant = Annotated[str, typer.Option("--tenant", help="The tenant's name.")]
TenantFilter = Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")]


def fail(message: str, exit_code: int) -> NoReturn:
    """Say what went wrong on stderr and exit with ``exit_code``."""
    Console(stderr=True).print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(exit_code)


def json_object_file(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` (``what`` names it in errors); a clear error and exit 2 otherwise."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", 2)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        fail(f"{path} is not valid JSON: {exc}", 2)
    if not isinstance(found, dict):
        fail(f"{path} must hold one {what} (an object)", 2)
    return found


def console() -> Console:
    """The terminal's width on a terminal; piped or redirected, tables are not squeezed to 80 columns."""
    terminal = Console()
    if not terminal.is_terminal and "COLUMNS" not in os.environ:
        terminal = Console(width=_PIPED_WIDTH)
    return terminal


def emit_json(data: object) -> None:
    """Print ``data`` as indented JSON on stdout, with nothing added (for scripts)."""
    console().out(json.dumps(data, indent=2, ensure_ascii=False), highlight=False)


@contextmanager
def waiting(what: str, *, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A spinner with elapsed time on stderr while the server works, yielding a way to reword it.

    Nothing is shown with ``quiet`` (--json) or when stderr is not a terminal.
    """
    err = Console(stderr=True)
    if quiet or not err.is_terminal:
        yield lambda _: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    # Transient: once the answer is in, the spinner's line is gone and only the answer stays.
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(escape(what), total=None)
        yield lambda words: progress.update(task, description=escape(words))


def start_and_follow(
    as_json: bool,
    no_wait: bool,
    start: Callable[[AdminClient], dict[str, Any]],
    follow: Callable[[AdminClient, dict[str, Any], bool], dict[str, Any]],
    shown: tuple[Callable[[dict[str, Any]], RenderableType], Callable[[dict[str, Any]], RenderableType]],
) -> None:
    """Start work on the server and, unless ``no_wait``, follow it to its end (``shown``: how the
    started and the ended work print); exit 1 when it ended ``failed``."""
    if no_wait:
        call(as_json, start, shown[0])
        return
    ended = call(as_json, lambda c: follow(c, start(c), as_json), shown[1])
    if ended["state"] == "failed":
        raise typer.Exit(1)


def call(
    as_json: bool,
    request: Callable[[AdminClient], dict[str, Any]],
    show: Callable[[dict[str, Any]], RenderableType],
) -> dict[str, Any]:
    """Make one API call, print its answer as JSON or through `show`, and return it; failures exit."""
    try:
        with connect() as admin:
            result = request(admin)
    except CLIError as exc:
        fail(exc.message, exc.exit_code)
    if as_json:
        emit_json(result)
    else:
        console().print(show(result))
    return result
