"""HTTP routes of the learning loop: traces, feedback, suites and evals, and the experience memory.

A tenant key reaches its own; the admin key reads every tenant's (``?tenant=`` narrows it) and acts
for its own tenant unless it names another (``tenant`` in the body or the query).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import aigrid.api.paths  # noqa: F401  (the path convertors the routes below name)
from aigrid.api.agents import json_object, query_number, whole_number_text
from aigrid.api.openai import json_response
from aigrid.api.scope import call_store, call_store_async, tenant_scope
from aigrid.api.state import state_of
from aigrid.errors import bad_request
from aigrid.learn.evals import MAX_BEST_OF, comparison, run_json
from aigrid.learn.suites import SPLITS, SUITES
from aigrid.store.experience import EXPERIENCE_KINDS
from aigrid.store.traces import OUTCOMES, TRACE_KINDS

_MAX_BODY_BYTES = 64 << 10
_MAX_WAIT_S = 3600.0
_JUDGEMENTS = ("success", "failure")


async def read_body(request: Request) -> dict[str, Any]:
    """The request's JSON object body (at most 64 KiB; none is an empty object)."""
    raw = await request.body()
    if len(raw) > _MAX_BODY_BYTES:
        raise bad_request(f"The body may be at most {_MAX_BODY_BYTES >> 10} KiB.")
    return json_object(raw or b"{}", "The body must be a JSON object.")


async def _reader(request: Request) -> int | None:
    """Whose records a read reaches: a tenant key's own; the admin's named tenant, or all."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    return await tenant_scope(state, principal, request.query_params.get("tenant"), "learning records")


async def _actor(request: Request, body: dict[str, Any]) -> int:
    """Whom an action is for: a tenant key's own tenant; the admin's named one, else its own."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    named = body.get("tenant", request.query_params.get("tenant"))
    if named is not None and not isinstance(named, str):
        raise bad_request("'tenant' must be a tenant's name.", param="tenant")
    scoped = await tenant_scope(state, principal, named, "learning records")
    return principal.tenant_id if scoped is None else scoped


def query_choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    """A query parameter that must be one of ``allowed`` (None when left out); a 400 naming them."""
    value = request.query_params.get(name)
    if value is not None and value not in allowed:
        raise bad_request(f"'{name}' must be one of: {', '.join(allowed)}.", param=name)
    return value


def whole_number(value: Any, name: str, low: int, high: int) -> int | None:
    """A body's whole number within bounds (None when left out); a 400 naming it otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f"'{name}' must be a whole number from {low} to {high}.", param=name)
    return value


def listing(data: list[dict[str, Any]], **extra: Any) -> Response:
    """A list in OpenAI's shape, with any extra top-level fields."""
    return json_response({"object": "list", "data": data, **extra})


# -- traces and feedback ------------------------------------------------------------------------------


async def list_traces(request: Request) -> Response:
    """GET /v1/traces: traces, newest first (``kind``, ``outcome``, ``limit``)."""
    state = state_of(request)
    tenant = await _reader(request)
    kind = query_choice(request, "kind", TRACE_KINDS)
    outcome = query_choice(request, "outcome", OUTCOMES)
    limit = query_number(request, "limit", 50, 1, 500)
    found = await call_store(state.learn.traces.recent, tenant, kind, outcome, limit)
    return listing([t.to_json() for t in found])


async def get_trace(request: Request) -> Response:
    """GET /v1/traces/{id}: one trace."""
    state = state_of(request)
    trace_id = whole_number_text(request.path_params["id"], "id", "A trace id is a whole number.")
    return json_response(
        (await call_store(state.learn.traces.get, trace_id, await _reader(request))).to_json()
    )


async def give_feedback(request: Request) -> Response:
    """POST /v1/feedback: a rating (and comment, correction) on a completion, process, entry or agent."""
    state = state_of(request)
    body = await read_body(request)
    tenant = await _actor(request, body)
    given = await call_store_async(state.learn.feedback.give(tenant, body))
    return json_response(given.to_json(), status=201)


async def list_feedback(request: Request) -> Response:
    """GET /v1/feedback: feedback received, newest first (``kind``, ``target``, ``limit``)."""
    state = state_of(request)
    tenant = await _reader(request)
    kind = query_choice(request, "kind", ("completion", "process", "entry", "agent"))
    target = request.query_params.get("target")
    limit = query_number(request, "limit", 50, 1, 500)
    found = await call_store(state.learn.feedback.store.recent, tenant, kind, target, limit)
    return listing([f.to_json() for f in found])


# -- suites and evals ---------------------------------------------------------------------------------


async def list_suites(request: Request) -> Response:
    """GET /v1/learn/suites: each suite, its metrics and its recorded splits."""
    state_of(request).keyring.authenticate(request)
    return listing([s.to_json() for s in SUITES.values()])


async def start_eval(request: Request) -> Response:
    """POST /v1/learn/evals: run a suite's split against a model (``wait`` seconds for its end)."""
    state = state_of(request)
    body = await read_body(request)
    tenant = await _actor(request, body)
    name = body.get("suite")
    if not isinstance(name, str):
        raise bad_request(f"'suite' must name a suite: {', '.join(SUITES)}.", param="suite")
    split = body.get("split", "heldout")
    if not isinstance(split, str):
        raise bad_request(f"'split' must be one of: {', '.join(SPLITS)}.", param="split")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not 0 < len(model) <= 128):
        raise bad_request("'model' must be a model's name.", param="model")
    if model is not None and not state.grid.router.knows(model) and state.grid.router.for_tier(model) is None:
        raise bad_request(f"No model named '{model}' on this grid.", param="model")
    experience = body.get("experience", True)
    if not isinstance(experience, bool):
        raise bad_request("'experience' must be true or false.", param="experience")
    limit = whole_number(body.get("limit"), "limit", 1, 100_000)
    best_of = whole_number(body.get("best_of"), "best_of", 1, MAX_BEST_OF) or 1
    wait = body.get("wait", 0)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= _MAX_WAIT_S:
        raise bad_request(f"'wait' must be a number of seconds from 0 to {_MAX_WAIT_S:g}.", param="wait")
    evals = state.learn.evals
    run = await call_store_async(evals.start(tenant, name, split, model, experience, limit, best_of))
    await evals.wait(run.id, float(wait))
    run = await call_store(evals.store.get, run.id, None)
    return json_response(run_json(run), status=202 if run.state == "running" else 200)


async def list_evals(request: Request) -> Response:
    """GET /v1/learn/evals: runs, newest first (``suite``, ``limit``)."""
    state = state_of(request)
    tenant = await _reader(request)
    suite = query_choice(request, "suite", tuple(SUITES))
    limit = query_number(request, "limit", 50, 1, 500)
    runs = await call_store(state.learn.evals.store.recent, tenant, suite, limit)
    return listing([run_json(r) for r in runs])


async def get_eval(request: Request) -> Response:
    """GET /v1/learn/evals/{id}: a run with its results."""
    state = state_of(request)
    store = state.learn.evals.store
    run = await call_store(store.get, request.path_params["id"], await _reader(request))
    return json_response(run_json(run, await call_store(store.results, run.id)))


async def compare_evals(request: Request) -> Response:
    """GET /v1/learn/compare?a=RUN&b=RUN: two runs side by side."""
    state = state_of(request)
    store = state.learn.evals.store
    tenant = await _reader(request)
    ids = [request.query_params.get(k) for k in ("a", "b")]
    if not all(ids):
        raise bad_request("Name the two runs to compare: ?a=RUN&b=RUN.", param="a" if not ids[0] else "b")
    a, b = [await call_store(store.get, i, tenant) for i in ids]
    if a.suite != b.suite:
        raise bad_request(
            f"Run {a.id} is of suite '{a.suite}' and {b.id} of '{b.suite}': compare like with like."
        )
    results = [await call_store(store.results, r.id) for r in (a, b)]
    return json_response(comparison(a, b, *results))


# -- the experience memory ----------------------------------------------------------------------------


async def list_memory(request: Request) -> Response:
    """GET /v1/learn/memory: examples, newest first (``kind``, ``outcome``, ``limit``), with counts."""
    state = state_of(request)
    tenant = await _reader(request)
    kind = query_choice(request, "kind", EXPERIENCE_KINDS)
    outcome = query_choice(request, "outcome", _JUDGEMENTS)
    limit = query_number(request, "limit", 50, 1, 500)
    store = state.learn.memory.store
    found = await call_store(store.recent, tenant, kind, outcome, limit)
    counts = await call_store(store.count, tenant)
    return listing([e.to_json() for e in found], counts=counts)


async def forget_example(request: Request) -> Response:
    """DELETE /v1/learn/memory/{id}: forget one example."""
    state = state_of(request)
    example_id = whole_number_text(request.path_params["id"], "id", "An example id is a whole number.")
    gone = await call_store_async(state.learn.memory.forget(example_id, await _reader(request)))
    return json_response({"id": gone.id, "object": "experience", "deleted": True})


async def teach(request: Request) -> Response:
    """POST /v1/learn/memory/teach: a suite's verified training examples into the tenant's memory
    (the admin key naming no tenant: into every tenant's, as shared examples)."""
    state = state_of(request)
    body = await read_body(request)
    tenant = await _actor(request, body)
    name = body.get("suite")
    if not isinstance(name, str):
        raise bad_request(f"'suite' must name a suite: {', '.join(SUITES)}.", param="suite")
    limit = whole_number(body.get("limit"), "limit", 1, 100_000)
    # The admin naming no tenant teaches the whole grid: training examples are no one's data.
    principal = state.keyring.authenticate(request)
    shared = principal.is_admin and body.get("tenant", request.query_params.get("tenant")) is None
    taught = await call_store_async(state.learn.teacher.teach(tenant, name, limit, shared))
    return json_response(taught.to_json())


routes = [
    Route("/v1/traces", list_traces, methods=["GET"]),
    Route("/v1/traces/{id}", get_trace, methods=["GET"]),
    Route("/v1/feedback", give_feedback, methods=["POST"]),
    Route("/v1/feedback", list_feedback, methods=["GET"]),
    Route("/v1/learn/suites", list_suites, methods=["GET"]),
    Route("/v1/learn/evals", start_eval, methods=["POST"]),
    Route("/v1/learn/evals", list_evals, methods=["GET"]),
    Route("/v1/learn/evals/{id}", get_eval, methods=["GET"]),
    Route("/v1/learn/compare", compare_evals, methods=["GET"]),
    Route("/v1/learn/memory", list_memory, methods=["GET"]),
    Route("/v1/learn/memory/{id:example}", forget_example, methods=["DELETE"]),
    Route("/v1/learn/memory/teach", teach, methods=["POST"]),
]
