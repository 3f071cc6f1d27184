"""The self-training loop from the command line: `aigrid learn train`, `resume`, `models`, `model`,
`promote` and `rollback` (the admin's; docs/learning.md), and the options and formats they share with
`aigrid learn dataset ...` (cli/learn_datasets.py) and `round` and `rounds` (cli/learn_rounds.py).

The commands are registered on `aigrid learn` by `register`, called from cli/learn.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.text import Text

from aigrid.cli import render
from aigrid.cli.client import AdminClient, CLIError
from aigrid.cli.common import JsonFlag, call, start_and_follow, waiting

_LOOK_S = 2.0
# The gate runs the held-out evals of two models one after the other before it answers: minutes, or more.
_GATE_TIMEOUT_S = 6 * 3600.0

# What the progress bar shows: what goes on, how far of how many (None: not known), and a note.
Show = Callable[[str, int, int | None, str], None]


class TaskKind(StrEnum):
    """A task kind the loop trains models for."""

    PLANNER = "planner"
    COMPILER = "compiler"
    AGENTS = "agents"


def above_zero(value: float | None) -> float | None:
    """A float option's check: Typer's `min` cannot leave 0 itself out."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{value:g} is not above 0.")
    return value


Kind = Annotated[TaskKind, typer.Option(help="The task kind: planner, compiler or agents.")]
KindFilter = Annotated[TaskKind | None, typer.Option("--kind", help="Only this task kind.")]
Steps = Annotated[int | None, typer.Option(min=1, help="Stop after this many optimizer steps.")]
Epochs = Annotated[
    float | None, typer.Option(callback=above_zero, help="Passes over the dataset (default 1).")
]
Layers = Annotated[
    int | None, typer.Option(min=1, help="Adapt only the top N decoder layers: faster (default: all).")
]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Start it, say what started, and return.")]
ModelName = Annotated[str, typer.Argument(metavar="NAME", help="The learned version, e.g. base@planner-1.")]


def register(learn_app: typer.Typer) -> None:
    """Add the commands of learned versions and the gate to `aigrid learn`."""
    for name, command in (
        ("train", train),
        ("resume", resume),
        ("models", models),
        ("model", model),
        ("promote", promote),
        ("rollback", rollback),
    ):
        learn_app.command(name)(command)


# -- shared formats ---------------------------------------------------------------------------------------


def utc_time(seconds: int | None) -> str:
    return render.when(seconds * 1_000_000 if seconds else None)


def _percent(rate: float | None) -> str:
    return render.NONE if rate is None else f"{rate * 100:.1f}%"


def _passed(passed: int, total: int) -> str:
    """Counts as "31/43 (72.1%)"."""
    return f"{passed}/{total} ({_percent(passed / total if total else None)})"


def _duration(seconds: float | None) -> str:
    """Seconds as "45s", "4m 05s" or "2h 03m"."""
    if seconds is None:
        return render.NONE
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def given(**values: Any) -> dict[str, Any]:
    """The options given: the server's defaults stand for the others."""
    return {name: value for name, value in values.items() if value is not None}


def model_path(name: str) -> str:
    return f"/v1/learn/models/{quote(name, safe='')}"


def kind_param(kind: TaskKind | None) -> dict[str, str | None]:
    return {"kind": None if kind is None else kind.value}


@contextmanager
def progress_bar(quiet: bool) -> Iterator[Show]:
    """A bar on stderr while the server works, yielding a way to move it.

    Nothing is shown with ``quiet`` (--json) or when stderr is not a terminal, as `waiting` does.
    """
    err = Console(stderr=True)
    if quiet or not err.is_terminal:
        yield lambda *_: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
    )
    # Transient: once the answer is in, the bar's line is gone and only the answer stays.
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("", total=None, note="")

        def show(what: str, done: int, total: int | None, note: str) -> None:
            # Drawn now: a look comes only every two seconds, so no state is missed between redraws.
            progress.update(
                task, description=escape(what), completed=done, total=total, note=escape(note), refresh=True
            )

        yield show


# -- training ---------------------------------------------------------------------------------------------


def train(
    dataset: Annotated[str, typer.Option(metavar="ID", help="The dataset to learn from (ds-...).")],
    kind: Kind = TaskKind.PLANNER,
    steps: Steps = None,
    epochs: Epochs = None,
    rank: Annotated[int | None, typer.Option(min=1, help="The LoRA adapter's rank (default 16).")] = None,
    learning_rate: Annotated[
        float | None, typer.Option(callback=above_zero, help="The optimizer's step size (default 3e-4).")
    ] = None,
    batch_tokens: Annotated[
        int | None, typer.Option(min=1, help="Padded tokens per optimizer step (default 2048).")
    ] = None,
    layers: Layers = None,
    parent: Annotated[
        str | None,
        typer.Option(
            "--from", metavar="NAME", help="Train on top of this learned version (default: the base)."
        ),
    ] = None,
    no_wait: NoWait = False,
    as_json: JsonFlag = False,
) -> None:
    """Train a new version of a kind's model on a dataset, following its progress until it ends."""
    settings = given(
        max_steps=steps,
        epochs=epochs,
        rank=rank,
        learning_rate=learning_rate,
        batch_tokens=batch_tokens,
        layers=layers,
    )
    body = {"kind": kind.value, "dataset": dataset, "train": settings, "wait": 0} | given(**{"from": parent})
    _start_training(lambda c: c.request("POST", "/v1/learn/models", body=body), no_wait, as_json)


def resume(name: ModelName, no_wait: NoWait = False, as_json: JsonFlag = False) -> None:
    """Go on training a version that failed or was stopped, from its checkpoint."""
    path = f"{model_path(name)}/resume"
    _start_training(lambda c: c.request("POST", path, body={"wait": 0}), no_wait, as_json)


def _start_training(start: Callable[[AdminClient], dict[str, Any]], no_wait: bool, as_json: bool) -> None:
    """Start a training and, unless ``no_wait``, follow it; exit 1 if it failed."""
    start_and_follow(as_json, no_wait, start, _follow_model, (_trained, _trained))


def _follow_model(client: AdminClient, shown: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """The version once it no longer trains, looked at about every two seconds."""
    name = shown["id"]
    try:
        with progress_bar(as_json) as show:
            show(*training_progress(shown))
            while shown["state"] == "training":
                time.sleep(_LOOK_S)
                shown = client.request("GET", model_path(name))
                show(*training_progress(shown))
    except KeyboardInterrupt:
        message = f"stopped waiting; {name} goes on training: see it with 'aigrid learn model {name}'"
        raise CLIError(message, exit_code=130) from None
    return shown


def training_progress(shown: Mapping[str, Any]) -> tuple[str, int, int | None, str]:
    """What the bar shows of a version in training: its step of steps, the loss and the time left."""
    training = (shown.get("lineage") or {}).get("training") or {}
    notes = []
    if training.get("loss") is not None:
        notes.append(f"loss {training['loss']:.3f}")
    if training.get("eta_s") is not None:
        notes.append(f"{_duration(training['eta_s'])} left")
    return (
        f"training {shown['id']}",
        training.get("step") or 0,
        training.get("steps") or None,
        ", ".join(notes),
    )


def _trained(shown: dict[str, Any]) -> RenderableType:
    """A version after `train` or `resume`: trained, failed, or still training."""
    name, state = shown["id"], shown["state"]
    training = (shown.get("lineage") or {}).get("training") or {}
    if state == "candidate":
        return Group(
            Text(f"{name} is a candidate: {_training_text(training)}.", style="bold green"),
            Text(f"It is served as a model of its own; run the gate with 'aigrid learn promote {name}'."),
        )
    if state == "failed":
        return Group(
            Text(f"{name} failed: {_training_text(training)}.", style="bold"),
            Text(f"error: {shown.get('error') or render.NONE}", style="red"),
            Text(f"Go on from its last checkpoint with 'aigrid learn resume {name}'."),
        )
    if state == "training":
        return Text(
            f"{name} is training on {shown.get('dataset')}: follow it with 'aigrid learn model {name}'."
        )
    return Text(f"{name} is {state}.")


def _training_text(training: Mapping[str, Any]) -> str:
    """A training's figures as "120/120 steps, loss 0.412, 5m 40s"."""
    if not training:
        return "no step taken"
    parts = [f"{training.get('step') or 0}/{training.get('steps') or '?'} steps"]
    if training.get("loss") is not None:
        parts.append(f"loss {training['loss']:.3f}")
    if training.get("seconds") is not None:
        parts.append(f"in {_duration(training['seconds'])}")
    elif training.get("eta_s") is not None:
        parts.append(f"{_duration(training['eta_s'])} left")
    return ", ".join(parts)


# -- versions ---------------------------------------------------------------------------------------------


def models(kind: KindFilter = None, as_json: JsonFlag = False) -> None:
    """List the learned versions, newest first, and the model each kind uses now."""
    call(as_json, lambda c: c.request("GET", "/v1/learn/models", params=kind_param(kind)), _models(kind))


def _models(kind: TaskKind | None) -> Callable[[dict[str, Any]], RenderableType]:
    def shown(result: dict[str, Any]) -> RenderableType:
        rows = (
            (
                m["id"],
                m["kind"],
                m["state"],
                m.get("dataset"),
                _training_text((m.get("lineage") or {}).get("training") or {}),
                _round_rates((m.get("lineage") or {}).get("rounds")),
                _gate_short((m.get("lineage") or {}).get("gate")),
                "yes" if m.get("served") else "no",
            )
            for m in result["data"]
        )
        columns = ("name", "kind", "state", "dataset", "training", "round pass rates", "gate", "served")
        if not result["data"]:
            listed: RenderableType = Text(
                "No learned version yet: 'aigrid learn train --dataset ID' makes one."
            )
        else:
            listed = render.table("learned models", columns, rows)
        return Group(listed, *_in_use(result, kind))

    return shown


def _round_rates(rounds: list[dict[str, Any]] | None) -> str:
    """The last round's pass rate of each source, as "student 40.0%, teacher 90.0%"."""
    if not rounds:
        return render.NONE
    rates = rounds[-1].get("pass_rate") or {}
    return ", ".join(f"{source} {_percent(r.get('rate'))}" for source, r in rates.items()) or render.NONE


def _gate_short(gate: Mapping[str, Any] | None) -> str:
    """The gate's decision with both models' pass counts on all held-out tasks."""
    if not gate:
        return render.NONE
    verdict = "promoted" if gate.get("promoted") else "kept"
    overall = (gate.get("metrics") or {}).get("all")
    if not overall:
        return verdict
    (new, new_total), (old, old_total) = overall["candidate"], overall["incumbent"]
    return f"{verdict}: {new}/{new_total} vs {old}/{old_total} in use"


def _in_use(result: Mapping[str, Any], kind: TaskKind | None) -> list[Text]:
    """A line per kind: the model in use, whether it is learned, and the last change to it."""
    learned = {m["id"] for m in result["data"]}
    changes: dict[str, Mapping[str, Any]] = {}
    for change in result.get("history") or []:
        changes.setdefault(change["kind"], change)  # newest first: the first is the last change
    lines = [Text("In use:", style="bold")]
    for task_kind, name in (result.get("in_use") or {}).items():
        if kind is not None and task_kind != kind.value:
            continue
        line = f"  {task_kind}: {name}" + (" (learned)" if name in learned else " (configured)")
        change = changes.get(task_kind)
        if change is not None:
            line += (
                f"; last change: {change['action']} at {utc_time(change.get('at'))} UTC ({change['reason']})"
            )
        lines.append(Text(line))
    return lines


def model(name: ModelName, as_json: JsonFlag = False) -> None:
    """Show a learned version's lineage: its base, dataset, settings, rounds, training and gate."""
    call(as_json, lambda c: c.request("GET", model_path(name)), _lineage)


def _lineage(shown: dict[str, Any]) -> RenderableType:
    lineage = shown.get("lineage") or {}
    served = "served" if shown.get("served") else "not served"
    parts: list[RenderableType] = [
        Text(f"{shown['id']} ({shown['kind']}) is {shown['state']}, {served}.", style="bold"),
        Text(f"  base: {shown.get('base')}"),
        Text(f"  dataset: {shown.get('dataset') or render.NONE}"),
        Text(
            f"  made {utc_time(shown.get('created_at'))} UTC, changed {utc_time(shown.get('updated_at'))} UTC"
        ),
    ]
    if shown.get("adapter"):
        parts.append(Text(f"  adapter: {shown['adapter']}"))
    job = {k: v for k, v in (lineage.get("job") or {}).items() if k not in ("base", "dataset")}
    parts.append(Text(f"  job: {_settings(job)}"))
    if lineage.get("sampling"):
        parts.append(Text(f"  sampled by {lineage.get('student')}: {_settings(lineage['sampling'])}"))
    if shown.get("error"):
        parts.append(Text(f"  error: {shown['error']}", style="red"))
    parts += _rounds_table(lineage.get("rounds") or [])
    parts += _training_lines(lineage.get("training") or {})
    if lineage.get("gate"):
        parts.append(gate_decision(lineage["gate"]))
    return Group(*parts)


def _settings(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items()) or render.NONE


def _rounds_table(rounds: list[dict[str, Any]]) -> list[RenderableType]:
    """The rounds that sampled for a version, with each source's pass rate."""
    if not rounds:
        return []
    sources = list(dict.fromkeys(s for r in rounds for s in r.get("pass_rate") or {}))
    rows = (
        (
            r.get("round"),
            render.count(r.get("tasks")),
            render.count(r.get("solved")),
            *(source_rate((r.get("pass_rate") or {}).get(s)) for s in sources),
            _duration(r.get("seconds")),
        )
        for r in rounds
    )
    return [render.table("rounds", ("round", "tasks", "solved", *sources, "time"), rows)]


def source_rate(rate: Mapping[str, Any] | None) -> str:
    return render.NONE if not rate else _passed(rate.get("passed") or 0, rate.get("tried") or 0)


def _training_lines(training: Mapping[str, Any]) -> list[RenderableType]:
    """The training's figures, then what the trainer said along the way."""
    if not training:
        return []
    parts: list[RenderableType] = [Text(f"Training: {_training_text(training)}.", style="bold")]
    events = training.get("events") or []
    if events:
        rows = ((e.get("event"), _settings({k: v for k, v in e.items() if k != "event"})) for e in events)
        parts.append(render.table("trainer events", ("event", "details"), rows))
    return parts


# -- the gate ---------------------------------------------------------------------------------------------


def promote(
    name: ModelName,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N held-out tasks.")] = None,
    no_experience: Annotated[
        bool, typer.Option("--no-experience", help="Show neither model examples from the memory.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run the gate: both models on the held-out suite; the version is put in use only if it wins."""
    body = given(limit=limit)
    if no_experience:
        body["experience"] = False

    def gated(client: AdminClient) -> dict[str, Any]:
        if not as_json:
            Console(stderr=True).print(
                f"Running the held-out evals of {escape(name)} and of the model in use for its kind: "
                "this may take minutes.",
                soft_wrap=True,
            )
        with waiting("the gate's held-out evals", quiet=as_json):
            path = f"{model_path(name)}/promote"
            return client.request("POST", path, body=body, timeout_s=_GATE_TIMEOUT_S)

    # The gate keeping the version out is a decision, not an error: exit 0 either way.
    call(as_json, gated, gate_decision)


def gate_decision(decision: Mapping[str, Any]) -> RenderableType:
    """The gate's decision: promoted or kept, why, and both models' held-out figures side by side."""
    old, new = decision.get("incumbent"), decision.get("candidate")
    if decision.get("promoted"):
        heading = Text(f"Promoted: {new} is in use now, in place of {old}.", style="bold green")
    else:
        heading = Text(f"Kept: {new} did not win; {old} stays in use.", style="bold yellow")
    rows = (
        (metric, _passed(*figures["incumbent"]), _passed(*figures["candidate"]))
        for metric, figures in (decision.get("metrics") or {}).items()
    )
    table = render.table(
        "held-out metrics", ("metric", f"in use: {old}", f"candidate: {new}"), rows, numeric=2
    )
    parts: list[RenderableType] = [heading, Text(f"reason: {decision.get('reason')}"), table]
    runs = decision.get("runs") or []
    if len(runs) == 2:
        compare = f"'aigrid learn compare {runs[0]} {runs[1]}'"
        parts.append(Text(f"Eval runs: {runs[0]} (in use), {runs[1]} (candidate); {compare} compares them."))
    return Group(*parts)


def rollback(
    kind: Annotated[TaskKind, typer.Argument(metavar="KIND", help="planner, compiler or agents.")],
    as_json: JsonFlag = False,
) -> None:
    """Put back the model a kind used before its last promotion."""
    call(
        as_json,
        lambda c: c.request("POST", "/v1/learn/rollback", body={"kind": kind.value}),
        lambda r: Text(f"{r['kind']}: rolled back from {r['from']} to {r['to']}, in use now."),
    )
