"""`aigrid learn dataset build`, `list`, `show` and `export`: the training sets made from verified traces."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from rich.console import Group, RenderableType
from rich.text import Text

from aigrid.cli import common, render
from aigrid.cli.client import AdminClient, CLIError
from aigrid.cli.common import JsonFlag, TenantFilter, call, console, emit_json, fail, waiting
from aigrid.cli.learn_models import Kind, KindFilter, TaskKind, given, kind_param, utc_time

# Building a dataset reads every verified trace of its kind: longer than an ordinary call.
_BUILD_TIMEOUT_S = 600.0
_CUT = 160
_CHUNK = 1 << 16
_T = TypeVar("_T")

dataset_app = typer.Typer(
    no_args_is_help=True, help="Build, list, show and export training sets made from verified traces."
)


def register(learn_app: typer.Typer) -> None:
    """Add `aigrid learn dataset ...` to `aigrid learn`."""
    learn_app.add_typer(dataset_app, name="dataset")


def _counts(counts: Mapping[str, int] | None) -> str:
    """Counts by name as "trace 12, sample 30"."""
    return ", ".join(f"{name} {render.count(n)}" for name, n in (counts or {}).items()) or render.NONE


def _one_line(value: object) -> str:
    words = " ".join(str(value).split())
    return words if len(words) <= _CUT else words[: _CUT - 1] + "…"


# -- datasets ---------------------------------------------------------------------------------------------


@dataset_app.command("build")
def dataset_build(
    kind: Kind = TaskKind.PLANNER,
    tenant: TenantFilter = None,
    as_json: JsonFlag = False,
) -> None:
    """Build a dataset of a task kind from the verified traces (every tenant's, or one's) and corrections."""
    body = {"kind": kind.value} | given(tenant=tenant)

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
    call(as_json, lambda c: c.request("GET", "/v1/learn/datasets", params=kind_param(kind)), _datasets)


def _datasets(result: dict[str, Any]) -> RenderableType:
    rows = (
        (
            d["id"],
            d["kind"],
            render.count(d["examples"]),
            _counts(d.get("sources")),
            _counts(d.get("left_out")),
            (d.get("sha256") or render.NONE)[:12],
            utc_time(d.get("created_at")),
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
        f"made {utc_time(result.get('created_at'))} UTC.",
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
