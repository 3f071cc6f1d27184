"""`aigrid learn round` and `rounds`: run a round of the self-training loop, and list the rounds."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Group, RenderableType
from rich.text import Text

from aigrid.cli import render
from aigrid.cli.client import AdminClient, CLIError
from aigrid.cli.common import JsonFlag, call, start_and_follow
from aigrid.cli.learn_models import (
    Epochs,
    Kind,
    Layers,
    NoWait,
    Steps,
    TaskKind,
    above_zero,
    gate_decision,
    given,
    model_path,
    progress_bar,
    source_rate,
    training_progress,
    utc_time,
)

_LOOK_S = 2.0
_ENDED_ROUND = ("done", "failed")


def register(learn_app: typer.Typer) -> None:
    """Add `aigrid learn round` and `rounds` to `aigrid learn`."""
    learn_app.command("round")(learning_round)
    learn_app.command("rounds")(rounds)


# -- rounds -----------------------------------------------------------------------------------------------


def learning_round(
    kind: Kind = TaskKind.PLANNER,
    tasks: Annotated[
        int | None, typer.Option(min=1, help="Sample only N training tasks (default: all).")
    ] = None,
    k: Annotated[
        int | None, typer.Option("-k", min=0, max=32, help="The student's answers per task (default 4).")
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(callback=above_zero, help="The student's sampling temperature (default 0.8)."),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(metavar="code|MODEL|none", help="Who answers each task once too (default: code)."),
    ] = None,
    steps: Steps = None,
    epochs: Epochs = None,
    no_promote: Annotated[
        bool, typer.Option("--no-promote", help="Train the candidate but do not run the gate.")
    ] = False,
    gate_limit: Annotated[
        int | None, typer.Option(min=1, help="The gate runs only N held-out tasks.")
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            help="Who answers the tasks (default: the model in use for the kind); a learned version is "
            "also what the round trains on top of.",
        ),
    ] = None,
    start: Annotated[
        int | None,
        typer.Option(min=0, help="The first training task (default: after the student's own round's)."),
    ] = None,
    layers: Layers = None,
    no_wait: NoWait = False,
    as_json: JsonFlag = False,
) -> None:
    """Run a round of the loop: sample and verify, build a dataset, train, and run the gate."""
    body = {"kind": kind.value} | given(
        tasks=tasks, k=k, temperature=temperature, gate_limit=gate_limit, student=student, start=start
    )
    if teacher is not None:
        body["teacher"] = None if teacher == "none" else teacher
    train = given(max_steps=steps, epochs=epochs, layers=layers)
    body |= {"train": train, "promote": not no_promote, "wait": 0}

    def begin(client: AdminClient) -> dict[str, Any]:
        return client.request("POST", "/v1/learn/rounds", body=body)

    start_and_follow(as_json, no_wait, begin, _follow_round, (_round, _round))


def _follow_round(client: AdminClient, shown: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """The round once it ended, looked at about every two seconds, its model's training followed too."""
    round_id = shown["id"]
    try:
        with progress_bar(as_json) as show:
            show(*_round_progress(client, shown))
            while shown["state"] not in _ENDED_ROUND:
                time.sleep(_LOOK_S)
                shown = client.request("GET", f"/v1/learn/rounds/{quote(round_id, safe='')}")
                show(*_round_progress(client, shown))
    except KeyboardInterrupt:
        message = f"stopped waiting; round {round_id} goes on: see it with 'aigrid learn rounds'"
        raise CLIError(message, exit_code=130) from None
    return shown


def _round_progress(client: AdminClient, shown: Mapping[str, Any]) -> tuple[str, int, int | None, str]:
    """What the bar shows of a round: tasks sampled, then its model's steps, then the gate."""
    head = f"round {shown['id']}"
    state = shown["state"]
    if state == "sampling":
        return f"{head}: sampling", shown.get("sampled") or 0, shown.get("tasks") or None, ""
    if state == "training" and shown.get("model"):
        trained = client.request("GET", model_path(shown["model"]))
        what, done, total, note = training_progress(trained)
        return f"{head}: {what}", done, total, note
    if state == "training":
        return f"{head}: building the dataset", 0, None, ""
    if state == "gating":
        return (
            f"{head}: the gate runs the held-out evals of {shown.get('model')} and of the model in use",
            0,
            None,
            "",
        )
    return f"{head}: {state}", 0, None, ""


def _round(shown: dict[str, Any]) -> RenderableType:
    """A round: how far it got, the pass rates it measured, what it made and the gate's decision."""
    tasks = shown.get("tasks")
    sampled = (
        f"{render.count(shown.get('sampled'))}/{render.count(tasks)} tasks sampled"
        if tasks
        else "no sampling"
    )
    parts: list[RenderableType] = [
        Text(f"Round {shown['id']} ({shown['kind']}) is {shown['state']}: {sampled}.", style="bold"),
        Text(f"  pass rate: {_pass_rates(shown.get('pass_rate'))}"),
        Text(f"  dataset: {shown.get('dataset') or render.NONE}, model: {shown.get('model') or render.NONE}"),
    ]
    if shown.get("decision"):
        parts.append(gate_decision(shown["decision"]))
    elif shown["state"] == "done":
        parts.append(Text(f"The gate did not run: run it with 'aigrid learn promote {shown.get('model')}'."))
    if shown.get("error"):
        parts.append(Text(f"error: {shown['error']}", style="red"))
    return Group(*parts)


def _pass_rates(rates: Mapping[str, Mapping[str, Any]] | None) -> str:
    """Each source's pass rate, as "student 12/30 (40.0%), teacher 27/30 (90.0%)"."""
    return ", ".join(f"{source} {source_rate(rate)}" for source, rate in (rates or {}).items()) or render.NONE


def rounds(as_json: JsonFlag = False) -> None:
    """List this server's rounds of the loop, newest first."""
    call(as_json, lambda c: c.request("GET", "/v1/learn/rounds"), _rounds)


def _rounds(result: dict[str, Any]) -> RenderableType:
    rows = (
        (
            r["id"],
            r["kind"],
            r["state"],
            f"{render.count(r.get('sampled'))}/{render.count(r['tasks'])}" if r.get("tasks") else render.NONE,
            _pass_rates(r.get("pass_rate")),
            r.get("dataset"),
            r.get("model"),
            _gate_verdict(r.get("decision")),
            utc_time(r.get("started_at")),
        )
        for r in result["data"]
    )
    columns = ("id", "kind", "state", "sampled", "pass rate", "dataset", "model", "gate", "started (UTC)")
    return render.table("learning rounds", columns, rows)


def _gate_verdict(decision: Mapping[str, Any] | None) -> str:
    if not decision:
        return render.NONE
    return "promoted" if decision.get("promoted") else "kept"
