"""``aigrid agent create "..."`` and ``aigrid agent edit NAME "..."``: agents written in a sentence.

The server compiles the words into a spec (or the next version of one) without saving it; the
command shows it as YAML (an edit as a diff), asks, and saves exactly what was shown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.syntax import Syntax
from rich.text import Text

from aigrid.cli import render
from aigrid.cli.client import AdminClient, CLIError, connect
from aigrid.cli.common import JsonFlag, Tenant, console, emit_json, fail, waiting

Yes = Annotated[bool, typer.Option("--yes", "-y", help="Save without asking.")]
TimeZone = Annotated[
    str,
    typer.Option(
        "--timezone",
        envvar="AIGRID_TIMEZONE",
        help="Your time zone: times in the words are in it (IANA name).",
    ),
]


def create(
    description: Annotated[
        str, typer.Argument(help='What the agent does, e.g. "Every weekday at 8:00, ..."')
    ],
    tenant: Tenant,
    timezone: TimeZone = "UTC",
    yes: Yes = False,
    as_json: JsonFlag = False,
) -> None:
    """Write an agent from a sentence: see its spec, confirm, and it is saved."""
    _confirm_and_save(
        lambda c: c.draft_agent(description, tenant, timezone),
        "the model writes the agent",
        tenant,
        yes,
        as_json,
    )


def edit(
    name: Annotated[str, typer.Argument(help="The agent's name.")],
    change: Annotated[str, typer.Argument(help='What to change, e.g. "also check the 24-inch one"')],
    tenant: Tenant,
    timezone: TimeZone = "UTC",
    yes: Yes = False,
    as_json: JsonFlag = False,
) -> None:
    """Change an agent in words: see the diff, confirm, and it is saved as a new version."""
    _confirm_and_save(
        lambda c: c.draft_edit(name, change, tenant, timezone),
        f"the model writes {name}'s next version",
        tenant,
        yes,
        as_json,
    )


def _confirm_and_save(
    draft_of: Callable[[AdminClient], dict[str, Any]], doing: str, tenant: str, yes: bool, as_json: bool
) -> None:
    try:
        with connect() as client:
            with waiting(doing, quiet=as_json):
                draft = draft_of(client)
            if not as_json or not yes:
                _show(draft)
            if not yes and not _confirmed():
                console().print("Not saved.")
                return
            saved = client.save_agent(draft["spec"], tenant)
    except CLIError as exc:
        fail(exc.message, exc.exit_code)
    if as_json:
        emit_json(saved)
    else:
        out = console()
        out.print(render.saved_agent(saved))
        if "webhook_secret" in saved:
            out.print(Text(f"Webhook secret (shown once): {saved['webhook_secret']}", style="bold"))


def _show(draft: dict[str, Any]) -> None:
    out = console()
    diff = draft.get("diff")
    if diff:
        out.print(Syntax(diff, "diff", theme="ansi_dark", background_color="default"))
    else:
        out.print(Syntax(draft["text"], "yaml", theme="ansi_dark", background_color="default"))
    for note in draft.get("notes") or []:
        out.print(Text(f"  note: {note}", style="dim"))


def _confirmed() -> bool:
    try:
        return typer.confirm("Save this agent?", default=True, err=True)
    except typer.Abort:  # no terminal, or the input ended: nothing to answer with
        fail("no answer to 'Save this agent?'; pass --yes to save what was compiled", 2)
