"""The self-training loop from the command line: `aigrid learn dataset ...`, `train`, `resume`, `models`,
`model`, `promote`, `rollback`, `round` and `rounds` (the admin's; docs/learning.md).

The commands are registered on `aigrid learn` by `register`, called from cli/learn.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.text import Text

from aigrid.cli import common, render
from aigrid.cli.client import AdminClient, CLIError
from aigrid.cli.common import (
    JsonFlag,
    TenantFilter,
    call,
    console,
    emit_json,
    fail,
    start_and_follow,
    waiting,
)

_LOOK_S = 2.0
# Building a dataset reads every verified trace of its kind: longer than an ordinary call.
_BUILD_TIMEOUT_S = 600.0
# The gate runs the held-out evals of two models one after the other before it answers: minutes, or more.
_GATE_TIMEOUT_S = 6 * 3600.0
_CUT = 160
_ENDED_ROUND = ("done", "failed")
_CHUNK = 1 << 16
_T = TypeVar("_T")

# What the progress bar shows: what goes on, how far of how many (None: not known), and a note.
Show = Callable[[str, int, int | None, str], None]


class TaskKind(StrEnum):
    """A task kind the loop trains models for."""

    PLANNER = "planner"
    COMPILER = "compiler"
    AGENTS = "agents"


def _above_zero(value: float | None) -> float | None:
    """A float option's check: Typer's `min` cannot leave 0 itself out."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{value:g} is not above 0.")
    return value


Kind = Annotated[TaskKind, typer.Option(help="The task kind: planner, compiler or agents.")]
KindFilter = Annotated[TaskKind | None, typer.Option("--kind", help="Only this task kind.")]
Steps = Annotated[int | None, typer.Option(min=1, help="Stop after this many optimizer steps.")]
Epochs = Annotated[
    float | None, typer.Option(callback=_above_zero, help="Passes over the dataset (default 1).")
]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Start it, say what started, and return.")]
ModelName = Annotated[str, typer.Argument(metavar="NAME", help="The learned version, e.g. base@planner-1.")]

dataset_app = typer.Typer(
    no_args_is_help=True, help="Build, list, show and export training sets made from verified traces."
)


def register(learn_app: typer.Typer) -> None:
    """Add the self-training commands to `aigrid learn`."""
    learn_app.add_typer(dataset_app, name="dataset")
    for name, command in (
        ("train", train),
        ("resume", resume),
        ("models", models),
        ("model", model),
        ("promote", promote),
        ("rollback", rollback),
        ("round", learning_round),
        ("rounds", rounds),
    ):
        learn_app.command(name)(command)


# -- shared formats ---------------------------------------------------------------------------------------


def _at(seconds: int | None) -> str:
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


def _counts(counts: Mapping[str, int] | None) -> str:
    """Counts by name as "trace 12, sample 30"."""
    return ", ".join(f"{name} {render.count(n)}" for name, n in (counts or {}).items()) or render.NONE


def _one_line(value: object) -> str:
    words = " ".join(str(value).split())
    return words if len(words) <= _CUT else words[: _CUT - 1] + "…"


def _given(**values: Any) -> dict[str, Any]:
    """The options given: the server's defaults stand for the others."""
    return {name: value for name, value in values.items() if value is not None}


def _model_path(name: str) -> str:
    return f"/v1/learn/models/{quote(name, safe='')}"


def _kind_param(kind: TaskKind | None) -> dict[str, str | None]:
    return {"kind": None if kind is None else kind.value}


@contextmanager
def _progress(quiet: bool) -> Iterator[Show]:
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


# -- datasets ---------------------------------------------------------------------------------------------


@dataset_app.command("build")
def dataset_build(
    kind: Kind = TaskKind.PLANNER,
    tenant: TenantFilter = None,
    as_json: JsonFlag = False,
) -> None:
    """Build a dataset of a task kind from the verified traces (every tenant's, or one's) and corrections."""
    body = {"kind": kind.value} | _given(tenant=tenant)

    def built(client: AdminClient) -> dict[str, Any]:
        with waiting(f"building a {kind.value} dataset from the verified traces", quiet=as_json):
            return client.request("POST", "/v1/learn/datasets", body=body, timeout_s=_BUILD_TIMEOUT_S)

    call(as_json, built, _built)


def _built(result: dict[str, Any]) -> RenderableType:
    heading = Text(
        f"Built dataset {result['id']} of {result['kind']}: {render.count(result['examples'])} examples."
    )
    if not result["examples"]:
        hint = Text(
            "It has no examples: no verified trace of this kind yet, nothing to train on.", style="yellow"
        )
    else:
        hint = Text(
            f"Train on it with 'aigrid learn train --dataset {result['id']} --kind {result['kind']}'."
        )
    return Group(heading, _dataset_facts(result), hint)


def _dataset_facts(dataset: Mapping[str, Any]) -> RenderableType:
    return Group(
        Text(f"  from: {_counts(dataset.get('sources'))}"),
        Text(f"  left out: {_counts(dataset.get('left_out'))}"),
        Text(f"  sha256: {dataset.get('sha256') or render.NONE}"),
    )


@dataset_app.command("list")
def dataset_list(kind: KindFilter = None, as_json: JsonFlag = False) -> None:
    """List the datasets, newest first."""
    call(as_json, lambda c: c.request("GET", "/v1/learn/datasets", params=_kind_param(kind)), _datasets)


def _datasets(result: dict[str, Any]) -> RenderableType:
    rows = (
        (
            d["id"],
            d["kind"],
            render.count(d["examples"]),
            _counts(d.get("sources")),
            _counts(d.get("left_out")),
            (d.get("sha256") or render.NONE)[:12],
            _at(d.get("created_at")),
        )
        for d in result["data"]
    )
    columns = ("id", "kind", "examples", "from", "left out", "sha256", "created (UTC)")
    return render.table("datasets", columns, rows)


@dataset_app.command("show")
def dataset_show(
    dataset: Annotated[str, typer.Argument(metavar="ID", help="The dataset's id (ds-...).")],
    examples: Annotated[int, typer.Option(min=0, max=20, help="Show its first N examples.")] = 3,
    as_json: JsonFlag = False,
) -> None:
    """Show a dataset: where its examples came from, what was left out, and its first examples."""
    path = f"/v1/learn/datasets/{quote(dataset, safe='')}"
    call(as_json, lambda c: c.request("GET", path, params={"examples": str(examples)}), _dataset)


def _dataset(result: dict[str, Any]) -> RenderableType:
    heading = Text(
        f"Dataset {result['id']} of {result['kind']}: {render.count(result['examples'])} examples, "
        f"made {_at(result.get('created_at'))} UTC.",
        style="bold",
    )
    parts: list[RenderableType] = [heading, _dataset_facts(result)]
    for number, example in enumerate(result.get("preview") or [], start=1):
        parts.append(Text(f"Example {number}:", style="bold"))
        parts += [
            Text(f"  {m.get('role', '?')}: {_one_line(m.get('content', ''))}")
            for m in example.get("messages", [])
        ]
    return Group(*parts)


@dataset_app.command("export")
def dataset_export(
    dataset: Annotated[str, typer.Argument(metavar="ID", help="The dataset's id (ds-...).")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", dir_okay=False, help="Write to FILE (default: stdout)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --output, say what was written as JSON.")
    ] = False,
) -> None:
    """Export a dataset's examples as JSON lines (OpenAI's fine-tuning format)."""
    if output is not None and output.exists() and not force:
        fail(f"{output} exists: give --force to overwrite it", 2)
    path = f"/v1/learn/datasets/{quote(dataset, safe='')}/export"
    if output is None:
        _connected(lambda client: _download(client, path, typer.get_binary_stream("stdout")))
        return
    lines, size = _connected(lambda client: _download_to(client, path, output))
    written = {"object": "export", "dataset": dataset, "file": str(output), "examples": lines, "bytes": size}
    if as_json:
        emit_json(written)
        return
    console().print(
        Text(f"Wrote {render.count(lines)} examples of {dataset} to {output} ({render.count(size)} bytes).")
    )


def _connected(work: Callable[[AdminClient], _T]) -> _T:
    """`work` with a client; a failure is said on stderr and exits, as `call` does."""
    try:
        # Looked up in common when called, as `call` does, so that the tests' fake server is behind it too.
        with common.client() as client:
            return work(client)
    except CLIError as exc:
        fail(exc.message, exc.exit_code)


def _download(client: AdminClient, path: str, sink: IO[bytes]) -> tuple[int, int]:
    """Stream a file of the API into ``sink``: its lines and bytes."""
    lines = size = 0
    with client.stream(path, _CHUNK) as chunks:
        for chunk in chunks:
            sink.write(chunk)
            lines, size = lines + chunk.count(b"\n"), size + len(chunk)
    sink.flush()
    return lines, size


def _download_to(client: AdminClient, path: str, output: Path) -> tuple[int, int]:
    """Download into a file beside ``output``, renamed to it once whole: a failure leaves no half file."""
    part = output.with_name(f".{output.name}.part")
    try:
        with part.open("wb") as file:
            counted = _download(client, path, file)
        part.replace(output)
    except OSError as exc:
        raise CLIError(f"cannot write {output}: {exc.strerror or exc}", exit_code=2) from exc
    finally:
        part.unlink(missing_ok=True)
    return counted


# -- training ---------------------------------------------------------------------------------------------


def train(
    dataset: Annotated[str, typer.Option(metavar="ID", help="The dataset to learn from (ds-...).")],
    kind: Kind = TaskKind.PLANNER,
    steps: Steps = None,
    epochs: Epochs = None,
    rank: Annotated[int | None, typer.Option(min=1, help="The LoRA adapter's rank (default 16).")] = None,
    learning_rate: Annotated[
        float | None, typer.Option(callback=_above_zero, help="The optimizer's step size (default 3e-4).")
    ] = None,
    batch_tokens: Annotated[
        int | None, typer.Option(min=1, help="Padded tokens per optimizer step (default 2048).")
    ] = None,
    no_wait: NoWait = False,
    as_json: JsonFlag = False,
) -> None:
    """Train a new version of a kind's model on a dataset, following its progress until it ends."""
    settings = _given(
        max_steps=steps, epochs=epochs, rank=rank, learning_rate=learning_rate, batch_tokens=batch_tokens
    )
    body = {"kind": kind.value, "dataset": dataset, "train": settings, "wait": 0}
    _start_training(lambda c: c.request("POST", "/v1/learn/models", body=body), no_wait, as_json)


def resume(name: ModelName, no_wait: NoWait = False, as_json: JsonFlag = False) -> None:
    """Go on training a version that failed or was stopped, from its checkpoint."""
    path = f"{_model_path(name)}/resume"
    _start_training(lambda c: c.request("POST", path, body={"wait": 0}), no_wait, as_json)


def _start_training(start: Callable[[AdminClient], dict[str, Any]], no_wait: bool, as_json: bool) -> None:
    """Start a training and, unless ``no_wait``, follow it; exit 1 if it failed."""
    start_and_follow(as_json, no_wait, start, _follow_model, (_trained, _trained))


def _follow_model(client: AdminClient, shown: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """The version once it no longer trains, looked at about every two seconds."""
    name = shown["id"]
    try:
        with _progress(as_json) as show:
            show(*_training_progress(shown))
            while shown["state"] == "training":
                time.sleep(_LOOK_S)
                shown = client.request("GET", _model_path(name))
                show(*_training_progress(shown))
    except KeyboardInterrupt:
        message = f"stopped waiting; {name} goes on training: see it with 'aigrid learn model {name}'"
        raise CLIError(message, exit_code=130) from None
    return shown


def _training_progress(shown: Mapping[str, Any]) -> tuple[str, int, int | None, str]:
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
    call(as_json, lambda c: c.request("GET", "/v1/learn/models", params=_kind_param(kind)), _models(kind))


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
            line += f"; last change: {change['action']} at {_at(change.get('at'))} UTC ({change['reason']})"
        lines.append(Text(line))
    return lines


def model(name: ModelName, as_json: JsonFlag = False) -> None:
    """Show a learned version's lineage: its base, dataset, settings, rounds, training and gate."""
    call(as_json, lambda c: c.request("GET", _model_path(name)), _lineage)


def _lineage(shown: dict[str, Any]) -> RenderableType:
    lineage = shown.get("lineage") or {}
    served = "served" if shown.get("served") else "not served"
    parts: list[RenderableType] = [
        Text(f"{shown['id']} ({shown['kind']}) is {shown['state']}, {served}.", style="bold"),
        Text(f"  base: {shown.get('base')}"),
        Text(f"  dataset: {shown.get('dataset') or render.NONE}"),
        Text(f"  made {_at(shown.get('created_at'))} UTC, changed {_at(shown.get('updated_at'))} UTC"),
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
        parts.append(_decision(lineage["gate"]))
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
            *(_source_rate((r.get("pass_rate") or {}).get(s)) for s in sources),
            _duration(r.get("seconds")),
        )
        for r in rounds
    )
    return [render.table("rounds", ("round", "tasks", "solved", *sources, "time"), rows)]


def _source_rate(rate: Mapping[str, Any] | None) -> str:
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
    body = _given(limit=limit)
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
            path = f"{_model_path(name)}/promote"
            return client.request("POST", path, body=body, timeout_s=_GATE_TIMEOUT_S)

    # The gate keeping the version out is a decision, not an error: exit 0 either way.
    call(as_json, gated, _decision)


def _decision(decision: Mapping[str, Any]) -> RenderableType:
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
        typer.Option(callback=_above_zero, help="The student's sampling temperature (default 0.8)."),
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
        typer.Option(metavar="MODEL", help="Who answers the tasks (default: the model in use for the kind)."),
    ] = None,
    no_wait: NoWait = False,
    as_json: JsonFlag = False,
) -> None:
    """Run a round of the loop: sample and verify, build a dataset, train, and run the gate."""
    body = {"kind": kind.value} | _given(
        tasks=tasks, k=k, temperature=temperature, gate_limit=gate_limit, student=student
    )
    if teacher is not None:
        body["teacher"] = None if teacher == "none" else teacher
    body |= {"train": _given(max_steps=steps, epochs=epochs), "promote": not no_promote, "wait": 0}

    def start(client: AdminClient) -> dict[str, Any]:
        return client.request("POST", "/v1/learn/rounds", body=body)

    start_and_follow(as_json, no_wait, start, _follow_round, (_round, _round))


def _follow_round(client: AdminClient, shown: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """The round once it ended, looked at about every two seconds, its model's training followed too."""
    round_id = shown["id"]
    try:
        with _progress(as_json) as show:
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
        trained = client.request("GET", _model_path(shown["model"]))
        what, done, total, note = _training_progress(trained)
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
        parts.append(_decision(shown["decision"]))
    elif shown["state"] == "done":
        parts.append(Text(f"The gate did not run: run it with 'aigrid learn promote {shown.get('model')}'."))
    if shown.get("error"):
        parts.append(Text(f"error: {shown['error']}", style="red"))
    return Group(*parts)


def _pass_rates(rates: Mapping[str, Mapping[str, Any]] | None) -> str:
    """Each source's pass rate, as "student 12/30 (40.0%), teacher 27/30 (90.0%)"."""
    return (
        ", ".join(f"{source} {_source_rate(rate)}" for source, rate in (rates or {}).items()) or render.NONE
    )


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
            _at(r.get("started_at")),
        )
        for r in result["data"]
    )
    columns = ("id", "kind", "state", "sampled", "pass rate", "dataset", "model", "gate", "started (UTC)")
    return render.table("learning rounds", columns, rows)


def _gate_verdict(decision: Mapping[str, Any] | None) -> str:
    if not decision:
        return render.NONE
    return "promoted" if decision.get("promoted") else "kept"
