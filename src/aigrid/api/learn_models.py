"""HTTP routes of the self-training loop: datasets, learned model versions, promotions and rounds.

These change the model the whole grid uses, so every route needs the admin key. Datasets are built
from every tenant's verified traces unless a ``tenant`` is named.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from aigrid.api.agents import whole_number_text
from aigrid.api.learn import listing, query_choice, read_body, whole_number
from aigrid.api.openai import json_response
from aigrid.api.scope import api_error_for, call_store, call_store_async, tenant_scope
from aigrid.api.state import AppState, state_of
from aigrid.errors import bad_request
from aigrid.learn.loop import RoundSettings
from aigrid.learn.sampling import CODE_TEACHER, SamplingSettings
from aigrid.store.accounts import Principal
from aigrid.store.learned import TASK_KINDS

_MAX_WAIT_S = 3600.0
_MAX_PREVIEW = 20
_SHOWN_CHANGES = 20


def _admin(request: Request) -> tuple[AppState, Principal]:
    state = state_of(request)
    return state, state.keyring.require_admin(request)


def _kind(value: Any, param: str = "kind") -> str:
    if value not in TASK_KINDS:
        raise bad_request(f"'{param}' must be one of: {', '.join(TASK_KINDS)}.", param=param)
    return str(value)


def _wait(body: dict[str, Any]) -> float:
    wait = body.get("wait", 0)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= _MAX_WAIT_S:
        raise bad_request(f"'wait' must be a number of seconds from 0 to {_MAX_WAIT_S:g}.", param="wait")
    return float(wait)


def _object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name, {})
    if not isinstance(value, dict):
        raise bad_request(f"'{name}' must be an object.", param=name)
    return value


def _model_json(state: AppState, name: str, shown: dict[str, Any]) -> dict[str, Any]:
    progress = state.learn.models.progress.get(name)
    if shown["state"] == "training" and progress is not None:
        shown["lineage"] = {**shown["lineage"], "training": progress.to_json()}
    shown["served"] = state.grid.router.knows(name)
    return shown


# -- datasets -------------------------------------------------------------------------------------------


async def build_dataset(request: Request) -> Response:
    """POST /v1/learn/datasets: a dataset of a kind from the verified traces (of ``tenant``, or all)."""
    state, principal = _admin(request)
    body = await read_body(request)
    kind = _kind(body.get("kind"))
    named = body.get("tenant")
    if named is not None and not isinstance(named, str):
        raise bad_request("'tenant' must be a tenant's name.", param="tenant")
    tenant = await tenant_scope(state, principal, named, "traces") if named is not None else None
    dataset = await call_store_async(state.learn.datasets.build(kind, tenant))
    return json_response(dataset.to_json(), status=201)


async def list_datasets(request: Request) -> Response:
    """GET /v1/learn/datasets: datasets, newest first (``kind``)."""
    state, _ = _admin(request)
    kind = query_choice(request, "kind", TASK_KINDS)
    found = await call_store(state.learn.models.store.datasets, kind)
    return listing([d.to_json() for d in found])


async def get_dataset(request: Request) -> Response:
    """GET /v1/learn/datasets/{id}: a dataset, with its first ``examples`` examples (at most 20)."""
    state, _ = _admin(request)
    dataset = await call_store(state.learn.models.store.dataset, request.path_params["id"])
    message = f"'examples' must be a whole number from 0 to {_MAX_PREVIEW}."
    count = whole_number_text(request.query_params.get("examples", "3"), "examples", message, _MAX_PREVIEW)
    shown = dataset.to_json()
    shown["preview"] = await asyncio.to_thread(_preview, Path(dataset.path), count)
    return json_response(shown)


def _preview(path: Path, count: int) -> list[Any]:
    lines: list[Any] = []
    if count == 0 or not path.is_file():
        return lines
    with path.open("rb") as file:
        for line in file:
            lines.append(orjson.loads(line))
            if len(lines) >= count:
                break
    return lines


async def export_dataset(request: Request) -> Response:
    """GET /v1/learn/datasets/{id}/export: the examples as JSON lines (OpenAI's fine-tuning format)."""
    state, _ = _admin(request)
    dataset = await call_store(state.learn.models.store.dataset, request.path_params["id"])
    path = Path(dataset.path)
    if not await asyncio.to_thread(path.is_file):
        raise api_error_for(410, f"Dataset '{dataset.id}' has lost its file ({path}).")
    return FileResponse(path, media_type="application/jsonl", filename=f"{dataset.id}.jsonl")


# -- learned versions -----------------------------------------------------------------------------------


async def train_model(request: Request) -> Response:
    """POST /v1/learn/models: train a new version of ``kind`` on ``dataset`` (``train``: settings), from
    the base model or ``from`` a learned version."""
    state, _ = _admin(request)
    body = await read_body(request)
    kind = _kind(body.get("kind", "planner"))
    dataset = body.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise bad_request(
            "'dataset' must name a dataset (POST /v1/learn/datasets makes one).", param="dataset"
        )
    wait = _wait(body)
    models = state.learn.models
    parent = body.get("from")
    if parent is not None and (not isinstance(parent, str) or "@" not in parent):
        raise bad_request("'from' must name a learned version to train on top of.", param="from")
    model = await call_store_async(models.train(kind, dataset, _object(body, "train"), parent=parent))
    await models.wait(model.name, wait)
    model = await call_store(models.store.model, model.name)
    status = 202 if model.state == "training" else 200
    return json_response(_model_json(state, model.name, model.to_json()), status=status)


async def list_models(request: Request) -> Response:
    """GET /v1/learn/models: learned versions, newest first (``kind``), and the models in use."""
    state, _ = _admin(request)
    kind = query_choice(request, "kind", TASK_KINDS)
    found = await call_store(state.learn.models.store.models, kind)
    data = [_model_json(state, m.name, m.to_json()) for m in found]
    history = await call_store(state.learn.models.store.history, kind, _SHOWN_CHANGES)
    return listing(data, in_use=state.learn.models.in_use(), history=[h.to_json() for h in history])


async def get_model(request: Request) -> Response:
    """GET /v1/learn/models/{name}: a version and its lineage."""
    state, _ = _admin(request)
    model = await call_store(state.learn.models.store.model, request.path_params["name"])
    return json_response(_model_json(state, model.name, model.to_json()))


async def resume_model(request: Request) -> Response:
    """POST /v1/learn/models/{name}/resume: go on training from the checkpoint."""
    state, _ = _admin(request)
    body = await read_body(request)
    models = state.learn.models
    model = await call_store_async(models.resume(request.path_params["name"]))
    await models.wait(model.name, _wait(body))
    model = await call_store(models.store.model, model.name)
    status = 202 if model.state == "training" else 200
    return json_response(_model_json(state, model.name, model.to_json()), status=status)


async def promote_model(request: Request) -> Response:
    """POST /v1/learn/models/{name}/promote: the gate; the version is put in use only if it wins."""
    state, principal = _admin(request)
    body = await read_body(request)
    limit = whole_number(body.get("limit"), "limit", 1, 100_000)
    experience = body.get("experience", state.config.learn.experience)
    if not isinstance(experience, bool):
        raise bad_request("'experience' must be true or false.", param="experience")
    name = request.path_params["name"]
    decision = await call_store_async(
        state.learn.models.promote(principal.tenant_id, name, limit, experience)
    )
    return json_response({"object": "promotion", **decision})


async def rollback(request: Request) -> Response:
    """POST /v1/learn/rollback: put back what was in use for ``kind`` before its last promotion."""
    state, _ = _admin(request)
    body = await read_body(request)
    change = await call_store_async(state.learn.models.rollback(_kind(body.get("kind"))))
    return json_response({"object": "rollback", **change})


# -- rounds ---------------------------------------------------------------------------------------------


async def start_round(request: Request) -> Response:
    """POST /v1/learn/rounds: sample, verify, build a dataset, train, and run the gate."""
    state, principal = _admin(request)
    body = await read_body(request)
    try:
        sampling = SamplingSettings(
            k=whole_number(body.get("k", 4), "k", 0, 32) or 0,
            temperature=_number(body.get("temperature", 0.8), "temperature"),
            teacher=_teacher(state, body.get("teacher", CODE_TEACHER)),
            experience=_flag(body.get("experience", state.config.learn.experience), "experience"),
        )
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    settings = RoundSettings(
        kind=_kind(body.get("kind", "planner")),
        tasks=whole_number(body.get("tasks"), "tasks", 1, 100_000),
        sampling=sampling,
        train=_object(body, "train"),
        promote=_flag(body.get("promote", True), "promote"),
        gate_limit=whole_number(body.get("gate_limit"), "gate_limit", 1, 100_000),
        student=_student(state, body.get("student")),
        start=whole_number(body.get("start"), "start", 0, 1_000_000),
    )
    loop = state.learn.loop
    chosen = loop.start(principal.tenant_id, settings)
    await loop.wait(chosen.id, _wait(body))
    return json_response(chosen.to_json(), status=202 if chosen.ended_at_us is None else 200)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"'{name}' must be a number.", param=name)
    return float(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be true or false.", param=name)
    return value


def _student(state: AppState, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not state.grid.router.knows(value)):
        raise bad_request("'student' must be a model this grid serves (a candidate, say).", param="student")
    return value


def _teacher(state: AppState, value: Any) -> str | None:
    if value is None or value == CODE_TEACHER:
        return value  # type: ignore[no-any-return]
    if not isinstance(value, str) or not state.grid.router.knows(value):
        raise bad_request(
            f"'teacher' must be '{CODE_TEACHER}' (plans written from the task's rule), a model on this grid, "
            "or null.",
            param="teacher",
        )
    return value


async def list_rounds(request: Request) -> Response:
    """GET /v1/learn/rounds: this server's rounds, newest first."""
    state, _ = _admin(request)
    rounds = sorted(state.learn.loop.rounds.values(), key=lambda r: r.started_at_us, reverse=True)
    return listing([r.to_json() for r in rounds])


async def get_round(request: Request) -> Response:
    """GET /v1/learn/rounds/{id}: a round."""
    state, _ = _admin(request)
    found = state.learn.loop.rounds.get(request.path_params["id"])
    if found is None:
        raise api_error_for(404, f"No round '{request.path_params['id']}' on this server.")
    return json_response(found.to_json())


routes = [
    Route("/v1/learn/datasets", build_dataset, methods=["POST"]),
    Route("/v1/learn/datasets", list_datasets, methods=["GET"]),
    Route("/v1/learn/datasets/{id}", get_dataset, methods=["GET"]),
    Route("/v1/learn/datasets/{id}/export", export_dataset, methods=["GET"]),
    Route("/v1/learn/models", train_model, methods=["POST"]),
    Route("/v1/learn/models", list_models, methods=["GET"]),
    Route("/v1/learn/models/{name}", get_model, methods=["GET"]),
    Route("/v1/learn/models/{name}/resume", resume_model, methods=["POST"]),
    Route("/v1/learn/models/{name}/promote", promote_model, methods=["POST"]),
    Route("/v1/learn/rollback", rollback, methods=["POST"]),
    Route("/v1/learn/rounds", start_round, methods=["POST"]),
    Route("/v1/learn/rounds", list_rounds, methods=["GET"]),
    Route("/v1/learn/rounds/{id}", get_round, methods=["GET"]),
]
