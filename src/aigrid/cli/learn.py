"""Learning from runs: `aigrid feedback`, `aigrid traces` and `aigrid learn ...` (suites, evals, memory)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Group, RenderableType
from rich.text import Text

from aigrid.cli import learn_datasets, learn_models, learn_rounds, render
from aigrid.cli.client import AdminClient, CLIError
from aigrid.cli.common import JsonFlag, TenantFilter, call, fail, start_and_follow, waiting

learn_app = typer.Typer(
    no_args_is_help=True, help="Measure models on task suites and fill the experience memory."
)
memory_app = typer.Typer(no_args_is_help=True, help="List and forget the experience memory's examples.")
learn_app.add_typer(memory_app, name="memory")

# The admin key acts for any tenant it names; a tenant's own key needs no --tenant.
ForTenant = Annotated[str | None, typer.Option("--tenant", help="For this tenant (with the admin key).")]
Limit = Annotated[int, typer.Option(min=1, max=500, help="At most this many, newest first.")]

_LOOK_S = 1.0
# Teaching checks every training task against the live services before answering: minutes, not seconds.
_TEACH_TIMEOUT_S = 3600.0
_REFUSALS_SHOWN = 5
_CUT = 60
_RATINGS = {1: "good", -1: "bad", 0: "neutral"}
_PREFIXES = (("ent-", "entry"), ("p-", "process"), ("req_", "completion"))
_AGENT = re.compile(r"(?:agent:)?(?P<name>[^@:\s]+)(?:@(?P<version>[1-9][0-9]*))?")


class TraceKind(StrEnum):
    """What left a trace."""

    ENTRY = "entry"
    COMPILE = "compile"
    PROCESS = "process"


class TraceOutcome(StrEnum):
    """How a traced run turned out."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"


class Split(StrEnum):
    """Which of a suite's recorded task splits."""

    HELDOUT = "heldout"
    TRAIN = "train"
    UNSEEN = "unseen"


class ExampleKind(StrEnum):
    """What an experience example shows: a super entry plan, a compiled agent spec or a tool call."""

    PLAN = "plan"
    SPEC = "spec"
    CALL = "call"


class ExampleOutcome(StrEnum):
    """Whether an example is kept as a success to show or a failure never to show."""

    SUCCESS = "success"
    FAILURE = "failure"


def _api(
    client: AdminClient,
    method: str,
    path: str,
    *,
    params: Mapping[str, object] | None = None,
    body: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """One call to the learning API, its query's values as text."""
    query = {k: None if v is None else str(v) for k, v in (params or {}).items()}
    return client.request(method, path, params=query, body=body, timeout_s=timeout_s)


def _cut(value: str | None) -> str:
    if not value:
        return render.NONE
    return value if len(value) <= _CUT else value[: _CUT - 1] + "…"


def _at(seconds: int | None) -> str:
    return render.when(seconds * 1_000_000 if seconds else None)


def _target(target: str) -> dict[str, Any]:
    """The feedback body's target, read from TARGET's shape; a clear error and exit 2 for any other."""
    if target.startswith("agent:") or "@" in target:
        match = _AGENT.fullmatch(target)
        if match is None:
            fail(f"'{target}' is not an agent: give NAME@VERSION, or agent:NAME for the newest version", 2)
        version = match["version"]
        return {"agent": match["name"]} | ({"version": int(version)} if version else {})
    for prefix, kind in _PREFIXES:
        if target.startswith(prefix) and len(target) > len(prefix):
            return {kind: target}
    fail(
        f"'{target}' is no feedback target: give an entry (ent-...), a process (p-...), a completion's "
        "X-Request-Id (req_...), or an agent (NAME@VERSION, agent:NAME)",
        2,
    )


def _correction(value: str | None) -> str | None:
    """The correction as given, or a file's text when given as @FILE."""
    if value is None or not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", 2)
    except UnicodeDecodeError as exc:
        fail(f"{path} is not UTF-8 text: {exc}", 2)


def feedback(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET",
            help="ent-... (an entry), p-... (a process), req_... (a completion), NAME@N (an agent's version) "
            "or agent:NAME (its newest).",
        ),
    ],
    good: Annotated[bool, typer.Option("--good", help="Rate it good (1).")] = False,
    bad: Annotated[bool, typer.Option("--bad", help="Rate it bad (-1).")] = False,
    neutral: Annotated[bool, typer.Option("--neutral", help="Rate it neither (0).")] = False,
    comment: Annotated[str | None, typer.Option(help="What was right or wrong about it.")] = None,
    correction: Annotated[
        str | None,
        typer.Option(metavar="TEXT|@FILE", help="The answer it should have been (for an entry, a plan)."),
    ] = None,
    tenant: ForTenant = None,
    as_json: JsonFlag = False,
) -> None:
    """Rate an entry, process, completion or agent; a bad entry is never shown as an example again."""
    ratings = [rating for chosen, rating in ((good, 1), (bad, -1), (neutral, 0)) if chosen]
    if len(ratings) != 1:
        fail("give exactly one of --good, --bad or --neutral", 2)
    body = _target(target) | {"rating": ratings[0]}
    if comment is not None:
        body["comment"] = comment
    text = _correction(correction)
    if text is not None:
        body["correction"] = text
    call(
        as_json,
        lambda c: _api(c, "POST", "/v1/feedback", params={"tenant": tenant}, body=body),
        _feedback,
    )


def _feedback(result: dict[str, Any]) -> Text:
    rating = _RATINGS.get(result["rating"], str(result["rating"]))
    return Text(f"Feedback {result['id']}: {result['kind']} {result['target']} is rated {rating}.")


def traces(
    kind: Annotated[TraceKind | None, typer.Option(help="Only traces of this kind.")] = None,
    outcome: Annotated[TraceOutcome | None, typer.Option(help="Only traces that turned out so.")] = None,
    limit: Limit = 50,
    tenant: TenantFilter = None,
    as_json: JsonFlag = False,
) -> None:
    """List the traces plans, compiles and processes left, newest first."""
    params = {"kind": kind, "outcome": outcome, "limit": limit, "tenant": tenant}
    call(as_json, lambda c: _api(c, "GET", "/v1/traces", params=params), _traces)


def _traces(result: dict[str, Any]) -> RenderableType:
    rows = (
        (
            t["id"],
            t["kind"],
            t["subject"],
            t["outcome"],
            _cut(t.get("reason")),
            t.get("model"),
            render.NONE if t.get("latency_s") is None else f"{t['latency_s']:.1f} s",
            _at(t.get("created_at")),
        )
        for t in result["data"]
    )
    columns = ("id", "kind", "subject", "outcome", "reason", "model", "latency", "when (UTC)")
    return render.table("traces", columns, rows)


@learn_app.command("suites")
def suites(as_json: JsonFlag = False) -> None:
    """List the eval suites, their metrics and how their train and held-out splits were made."""
    call(as_json, lambda c: _api(c, "GET", "/v1/learn/suites"), _suites)


def _suites(result: dict[str, Any]) -> RenderableType:
    rows = []
    for suite in result["data"]:
        splits = suite.get("splits") or {}
        train, heldout = splits.get("train") or {}, splits.get("heldout") or {}
        made = "\n".join(f"{name}: {s['made']}" for name, s in (("train", train), ("held-out", heldout)) if s)
        tasks = (render.count(s.get("tasks")) for s in (train, heldout))
        rows.append((suite["name"], *tasks, ", ".join(suite.get("metrics") or []), made or render.NONE))
    return render.table("suites", ("suite", "train", "held-out", "metrics", "how the splits were made"), rows)


@learn_app.command("teach")
def teach(
    suite: Annotated[str, typer.Argument(help="The suite to teach from: entry or compiler.")],
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N training tasks.")] = None,
    tenant: ForTenant = None,
    as_json: JsonFlag = False,
) -> None:
    """Put a suite's verified training examples into the experience memory (this takes minutes)."""
    body: dict[str, Any] = {"suite": suite} | ({"limit": limit} if limit is not None else {})

    def taught(client: AdminClient) -> dict[str, Any]:
        with waiting(f"checking {suite}'s training tasks against the services", quiet=as_json):
            return _api(
                client,
                "POST",
                "/v1/learn/memory/teach",
                params={"tenant": tenant},
                body=body,
                timeout_s=_TEACH_TIMEOUT_S,
            )

    call(as_json, taught, _taught)


def _taught(result: dict[str, Any]) -> RenderableType:
    lines = [
        Text(
            f"Taught {render.count(result['taught'])} examples of {result['suite']}'s training split; "
            f"{render.count(result['already'])} were there already, {render.count(result['refused'])} "
            f"refused by the verifier ({result['seconds']:.1f} s)."
        )
    ]
    refusals = result.get("refusals") or []
    if refusals:
        lines.append(Text(f"First refusals ({min(len(refusals), _REFUSALS_SHOWN)} of {result['refused']}):"))
        lines += [Text(f"  {refusal}", style="yellow") for refusal in refusals[:_REFUSALS_SHOWN]]
    return Group(*lines)


@learn_app.command("eval")
def evaluate(
    suite: Annotated[str, typer.Argument(help="The suite: entry, compiler or tools.")],
    split: Annotated[
        Split,
        typer.Option(help="Which recorded split to run: heldout, train or unseen (entry only)."),
    ] = Split.HELDOUT,
    model: Annotated[str | None, typer.Option(help="The model to measure (default: the server's).")] = None,
    no_experience: Annotated[
        bool, typer.Option("--no-experience", help="Show the model no examples from the memory.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N tasks.")] = None,
    tenant: ForTenant = None,
    as_json: JsonFlag = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Start the run, print its id and return.")
    ] = False,
) -> None:
    """Run a suite's split against a model and show each metric's pass rate with its 95% interval."""
    body: dict[str, Any] = {"suite": suite, "split": split.value, "experience": not no_experience, "wait": 0}
    if model is not None:
        body["model"] = model
    if limit is not None:
        body["limit"] = limit

    def start(client: AdminClient) -> dict[str, Any]:
        return _api(client, "POST", "/v1/learn/evals", params={"tenant": tenant}, body=body)

    start_and_follow(as_json, no_wait, start, _follow, (_started, _eval_run))


def _follow(client: AdminClient, run: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """The run once it is no longer running, looked at about every second."""
    run_id = run["id"]
    try:
        with waiting(f"eval {run_id}: {run['done']}/{run['total']} tasks", quiet=as_json) as say:
            while run["state"] == "running":
                time.sleep(_LOOK_S)
                run = _api(client, "GET", f"/v1/learn/evals/{quote(run_id, safe='')}")
                say(f"eval {run_id}: {run['done']}/{run['total']} tasks")
    except KeyboardInterrupt:
        message = f"stopped waiting; eval {run_id} goes on: see it with 'aigrid learn show {run_id}'"
        raise CLIError(message, exit_code=130) from None
    return run


def _started(result: dict[str, Any]) -> Text:
    return Text(f"Eval {result['id']} is {result['state']}: see it with 'aigrid learn show {result['id']}'.")


def _rate(value: float | None) -> str:
    return render.NONE if value is None else f"{value * 100:.1f}%"


def _interval(metric: Mapping[str, Any]) -> str:
    low, high = metric.get("low"), metric.get("high")
    if low is None or high is None:
        return render.NONE
    return f"{low * 100:.1f}–{high * 100:.1f}%"


def _rate_within(metric: Mapping[str, Any] | None) -> str:
    """A metric's rate with its 95% interval, as "75.0% [30.0–95.0%]"."""
    if not metric:
        return render.NONE
    return f"{_rate(metric.get('rate'))} [{_interval(metric)}]"


def _describe(run: Mapping[str, Any]) -> str:
    experience = "with" if run.get("experience") else "without"
    return f"{run['suite']}, {run['split']} split, model {run['model']}, {experience} experience"


def _eval_run(result: dict[str, Any]) -> RenderableType:
    """A run: what ran and how far it got, each metric's figures, and the error of a failed one."""
    heading = Text(
        f"Eval {result['id']} ({_describe(result)}) is {result['state']}: "
        f"{result['done']}/{result['total']} tasks.",
        style="bold",
    )
    rows = (
        (name, f"{m['passed']}/{m['total']}", _rate(m.get("rate")), _interval(m))
        for name, m in (result.get("metrics") or {}).items()
    )
    metrics = render.table("metrics", ("metric", "passed", "rate", "95% interval"), rows, numeric=3)
    parts: list[RenderableType] = [heading, metrics]
    if result["state"] == "failed":
        parts.append(Text(f"failed: {result.get('error') or render.NONE}", style="red"))
    return Group(*parts)


@learn_app.command("evals")
def evals(
    suite: Annotated[str | None, typer.Option(help="Only runs of this suite.")] = None,
    limit: Limit = 50,
    as_json: JsonFlag = False,
) -> None:
    """List eval runs, newest first."""
    params = {"suite": suite, "limit": limit}
    call(as_json, lambda c: _api(c, "GET", "/v1/learn/evals", params=params), _evals)


def _evals(result: dict[str, Any]) -> RenderableType:
    rows = (
        (
            r["id"],
            r["suite"],
            r["split"],
            r["model"],
            "yes" if r.get("experience") else "no",
            r["state"],
            f"{r['done']}/{r['total']}",
            ", ".join(f"{name} {_rate(m.get('rate'))}" for name, m in (r.get("metrics") or {}).items())
            or render.NONE,
            _at(r.get("started_at")),
        )
        for r in result["data"]
    )
    columns = ("id", "suite", "split", "model", "experience", "state", "tasks", "rates", "started (UTC)")
    return render.table("eval runs", columns, rows)


@learn_app.command("show")
def show(
    run: Annotated[str, typer.Argument(metavar="RUN", help="The eval run's id (evr-...).")],
    as_json: JsonFlag = False,
) -> None:
    """Show an eval run: its metrics, then how each task was judged."""
    call(as_json, lambda c: _api(c, "GET", f"/v1/learn/evals/{quote(run, safe='')}"), _shown)


def _shown(result: dict[str, Any]) -> RenderableType:
    rows = (
        (
            r["task"],
            "yes" if r["passed"] else "no",
            render.NONE if r.get("seconds") is None else f"{r['seconds']:.1f}",
            _cut(r.get("reason")),
        )
        for r in result.get("results") or []
    )
    results = render.table("results", ("task", "passed", "seconds", "reason"), rows)
    return Group(_eval_run(result), results)


@learn_app.command("compare")
def compare(
    a: Annotated[str, typer.Argument(metavar="A", help="The first eval run's id.")],
    b: Annotated[str, typer.Argument(metavar="B", help="The second eval run's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Compare two eval runs metric by metric, and list the tasks they judged differently."""
    call(as_json, lambda c: _api(c, "GET", "/v1/learn/compare", params={"a": a, "b": b}), _comparison)


def _comparison(result: dict[str, Any]) -> RenderableType:
    a, b = result["a"], result["b"]
    heading = [Text(f"A: {a['id']} ({_describe(a)})"), Text(f"B: {b['id']} ({_describe(b)})")]
    rows = (
        (
            m["name"],
            _rate_within(m.get("a")),
            _rate_within(m.get("b")),
            render.NONE if m.get("difference") is None else f"{m['difference'] * 100:+.1f}",
            "yes" if m.get("significant") else "no",
        )
        for m in result["metrics"]
    )
    columns = ("metric", "A rate [95%]", "B rate [95%]", "B − A (points)", "significant")
    metrics = render.table("metrics", columns, rows)
    differ = result.get("tasks") or []
    if not differ:
        return Group(*heading, metrics, Text("No task both runs have was judged differently."))
    verdict = {True: "passed", False: "failed"}
    tasks = ((t["task"], verdict.get(t["a"], render.NONE), verdict.get(t["b"], render.NONE)) for t in differ)
    return Group(*heading, metrics, render.table("tasks judged differently", ("task", "A", "B"), tasks))


@memory_app.command("list")
def memory_list(
    kind: Annotated[ExampleKind | None, typer.Option(help="Only plans or only specs.")] = None,
    outcome: Annotated[ExampleOutcome | None, typer.Option(help="Only successes or only failures.")] = None,
    limit: Limit = 50,
    tenant: TenantFilter = None,
    as_json: JsonFlag = False,
) -> None:
    """Count the experience memory's examples and list the newest."""
    params = {"kind": kind, "outcome": outcome, "limit": limit, "tenant": tenant}
    call(as_json, lambda c: _api(c, "GET", "/v1/learn/memory", params=params), _examples)


def _examples(result: dict[str, Any]) -> RenderableType:
    counts = "; ".join(
        f"{kind}: " + ", ".join(f"{render.count(n)} {outcome}" for outcome, n in by_outcome.items())
        for kind, by_outcome in (result.get("counts") or {}).items()
    )
    rows = (
        (e["id"], e["kind"], e["outcome"], e.get("source"), render.count(e.get("uses")), _cut(e.get("text")))
        for e in result["data"]
    )
    table = render.table("experience", ("id", "kind", "outcome", "source", "uses", "text"), rows)
    return Group(Text(counts or "The experience memory is empty."), table)


@memory_app.command("rm")
def memory_rm(
    example: Annotated[int, typer.Argument(metavar="ID", help="The example's id.")],
    tenant: ForTenant = None,
    as_json: JsonFlag = False,
) -> None:
    """Forget an example of the experience memory."""
    call(
        as_json,
        lambda c: _api(c, "DELETE", f"/v1/learn/memory/{example}", params={"tenant": tenant}),
        lambda r: Text(f"Example {r['id']} is forgotten."),
    )


# Last, so that `aigrid learn --help` lists them after the eval and memory commands: the self-training
# loop's datasets, learned models and rounds.
learn_datasets.register(learn_app)
learn_models.register(learn_app)
learn_rounds.register(learn_app)
