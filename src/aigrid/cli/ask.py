"""``aigrid ask "..."``: one sentence to the super entry; see what it would do, confirm once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from aigrid.cli.client import CLIError, connect
from aigrid.cli.common import JsonFlag, console, emit_json, fail, json_object_file, waiting

_WAIT_S = 300.0


def ask(
    sentence: Annotated[str, typer.Argument(help='What you want done, e.g. "buy the cheapest X and pay"')],
    user: Annotated[
        str | None, typer.Option("--user", help="Whose wallet pays (default: the key's tenant).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Go ahead without asking.")] = False,
    plan: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            metavar="FILE",
            help="A plan to carry out instead of the model's (JSON, in the plan's own form).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask for something in a sentence: aigrid plans it across services, asks once, and does it."""
    given = json_object_file(plan, "plan") if plan is not None else None
    try:
        with connect() as client:
            with waiting("working it out" if yes else "planning", quiet=as_json):
                entry = client.ask(sentence, user, yes, _WAIT_S, given)
            if entry["state"] == "awaiting_confirmation":
                if not as_json:
                    _show_summary(entry)
                if _confirmed(entry):
                    with waiting("carrying it out", quiet=as_json):
                        entry = client.confirm_entry(entry["id"], _WAIT_S)
                else:
                    entry = client.decline_entry(entry["id"])
    except CLIError as exc:
        fail(exc.message, exc.exit_code)
    _show_end(entry, as_json)


def _show_summary(entry: dict[str, Any]) -> None:
    out = console()
    out.print(Text("aigrid would:", style="bold"))
    for line in str(entry["summary"]["text"]).splitlines():
        out.print(Text(f"  {line}"))


def _confirmed(entry: dict[str, Any]) -> bool:
    try:
        return typer.confirm("Go ahead?", default=False, err=True)
    except typer.Abort:  # no terminal, or the input ended: nothing to answer with
        fail(f"no answer to 'Go ahead?' (entry {entry['id']} waits); pass --yes to go ahead", 2)


def _show_end(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(entry)
        return
    out = console()
    style = {"done": "green", "failed": "red"}.get(entry["state"], "yellow")
    answer = (
        entry.get("answer") or f"Entry {entry['id']} is {entry['state']}; see GET /v1/entry/{entry['id']}."
    )
    out.print(Text(answer, style=style))
    if entry["state"] == "failed":
        raise typer.Exit(1)
