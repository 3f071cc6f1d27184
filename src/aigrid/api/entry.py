"""HTTP routes of the super entry: ``/v1/entry`` to ask, confirm, decline and look."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.api.agents import json_object, owner, query_number
from aigrid.api.openai import json_response
from aigrid.api.scope import call_store, call_store_async
from aigrid.api.state import AppState, state_of
from aigrid.errors import bad_request
from aigrid.store.entries import ENTRY_STATES, EntryRecord, JournalStep

_MAX_BODY_BYTES = 64 << 10
_MAX_WAIT_S = 600.0


def entry_object(entry: EntryRecord, journal: list[JournalStep] | None = None) -> dict[str, Any]:
    """An entry as the API shows it; with its saga's journal when asked for one entry."""
    body: dict[str, Any] = {
        "object": "entry",
        "id": entry.id,
        "user": entry.user,
        "input": entry.input,
        "state": entry.state,
        "summary": entry.summary,
        "answer": entry.answer,
        "plan": entry.plan,
        "created": entry.created_at_us // 1_000_000,
        "updated": entry.updated_at_us // 1_000_000,
    }
    if journal is not None:
        body["journal"] = [
            {"seq": s.seq, "kind": s.kind, **s.payload, "created": s.created_at_us // 1_000_000}
            for s in journal
        ]
    return body


def _wait_s(body: dict[str, Any]) -> float:
    wait = body.get("wait", 120)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= _MAX_WAIT_S:
        raise bad_request(f"'wait' must be a number of seconds from 0 to {_MAX_WAIT_S:g}.", param="wait")
    return float(wait)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > _MAX_BODY_BYTES:
        raise bad_request(f"The body may be at most {_MAX_BODY_BYTES >> 10} KiB.")
    return json_object(raw or b"{}", "The body must be a JSON object.")


async def ask(request: Request) -> Response:
    """POST /v1/entry: ``input`` (a sentence), ``user``, ``confirm``, ``plan`` (instead of the model's)."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    body = await _body(request)
    text = body.get("input")
    if not isinstance(text, str):
        raise bad_request("'input' must be the sentence saying what you want done.", param="input")
    user = body.get("user", principal.tenant)
    if not isinstance(user, str):
        raise bad_request("'user' must be a user name.", param="user")
    confirm = body.get("confirm", False)
    if not isinstance(confirm, bool):
        raise bad_request("'confirm' must be true or false.", param="confirm")
    plan = body.get("plan")
    if plan is not None and not isinstance(plan, dict):
        raise bad_request("'plan' must be an object with 'steps'.", param="plan")
    work = state.entries.ask(
        principal.tenant_id, user, text, confirm=confirm, plan=plan, wait_s=_wait_s(body)
    )
    return json_response(entry_object(await call_store_async(work)))


async def confirm(request: Request) -> Response:
    """POST /v1/entry/{id}/confirm: carry out what the summary said."""
    state = state_of(request)
    tenant = await owner(request)
    wait = _wait_s(await _body(request))
    work = state.entries.confirm(tenant, request.path_params["id"], wait)
    return json_response(entry_object(await call_store_async(work)))


async def decline(request: Request) -> Response:
    """POST /v1/entry/{id}/decline: do nothing of it."""
    state = state_of(request)
    work = state.entries.decline(await owner(request), request.path_params["id"])
    return json_response(entry_object(await call_store_async(work)))


async def get_entry(request: Request) -> Response:
    """GET /v1/entry/{id}: the entry and its saga's journal."""
    state = state_of(request)
    entry = await call_store(state.entries.store.get, request.path_params["id"], await owner(request))
    journal = await call_store(state.entries.store.journal, entry.id)
    return json_response(entry_object(entry, journal))


async def list_entries(request: Request) -> Response:
    """GET /v1/entry: the caller's entries, newest first (``state`` and ``limit`` filter)."""
    state: AppState = state_of(request)
    tenant = await owner(request)
    wanted = request.query_params.get("state")
    if wanted is not None and wanted not in ENTRY_STATES:
        raise bad_request(f"'state' must be one of: {', '.join(ENTRY_STATES)}.", param="state")
    limit = query_number(request, "limit", 50, 1, 500)
    found = await call_store(state.entries.store.find, tenant, wanted, limit)
    return json_response({"object": "list", "data": [entry_object(e) for e in found]})


routes = [
    Route("/v1/entry", ask, methods=["POST"]),
    Route("/v1/entry", list_entries, methods=["GET"]),
    Route("/v1/entry/{id}", get_entry, methods=["GET"]),
    Route("/v1/entry/{id}/confirm", confirm, methods=["POST"]),
    Route("/v1/entry/{id}/decline", decline, methods=["POST"]),
]
