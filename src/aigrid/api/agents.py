"""HTTP routes of the kernel: agent specs under /v1/agents, their runs under /v1/processes."""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import aigrid.api.paths  # noqa: F401  (the path convertors the routes below name)
from aigrid.api.openai import json_response
from aigrid.api.scope import call_store, call_store_async, tenant_scope
from aigrid.api.state import state_of
from aigrid.errors import APIError, bad_request
from aigrid.kernel.compiler import spec_diff
from aigrid.spec import AgentSpec, WebhookTrigger
from aigrid.store.agents import StoredSpec
from aigrid.store.processes import STATES, ProcessRecord, Step
from aigrid.store.triggers import TriggerStore

MAX_SPEC_BYTES = 1 << 20
_MAX_WEBHOOK_BYTES = 64 << 10
M = TypeVar("M", bound=BaseModel)


def _agent_object(stored: StoredSpec, tenants: dict[int, str]) -> dict[str, Any]:
    return {
        "object": "agent",
        "name": stored.spec.name,
        "version": stored.version,
        "tenant": tenants.get(stored.tenant_id),
        "created_at": stored.created_at_us // 1_000_000,
        "spec": stored.spec.model_dump(mode="json"),
    }


def json_object(raw: bytes, shape: str) -> dict[str, Any]:
    """A request body that must be a JSON object; ``shape`` says what it should hold."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise bad_request(shape)
    return body


# The largest id or sequence number a database column holds (a signed 64-bit integer).
MAX_ID = 2**63 - 1


def whole_number_text(raw: str, param: str, message: str, high: int = MAX_ID) -> int:
    """A path or query value that must be a whole number from 0 to ``high``; a 400 with ``message``."""
    # A bound on the digits first: int() of a huge string costs time before the range check.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(high)) or int(raw) > high:
        raise bad_request(message, param=param)
    return int(raw)


def query_number(request: Request, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within bounds; a 400 naming it otherwise."""
    raw = request.query_params.get(name) or str(default)
    number = whole_number_text(raw, name, f"'{name}' must be a whole number from {low} to {high}.", high)
    if number < low:
        raise bad_request(f"'{name}' must be a whole number from {low} to {high}.", param=name)
    return number


def _spec_from(raw: bytes) -> tuple[AgentSpec, str | None]:
    """The spec in a request body, and the tenant it names (the admin's way to choose one)."""
    if len(raw) > MAX_SPEC_BYTES:
        raise bad_request(f"An agent spec may be at most {MAX_SPEC_BYTES} bytes.")
    body = json_object(raw, "The body must be a JSON object: an agent spec.")
    tenant = body.pop("tenant", None)
    if tenant is not None and not isinstance(tenant, str):
        raise bad_request("'tenant' must be a tenant's name.", param="tenant")
    return validated(AgentSpec, body, "agent spec"), tenant


def validated(model: type[M], body: dict[str, Any], what: str) -> M:
    """``body`` as a ``model``; the first problem as a 400 naming the field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = str(first["msg"]).removeprefix("Value error, ")
        raise bad_request(f"Invalid {what}: {param}: {message}", param=param) from exc


async def save_spec(request: Request, raw: bytes) -> Response:
    """Store the spec in a request body as the agent's next version (200 when nothing changed)."""
    spec, tenant = _spec_from(raw)
    tenant_id = await named_tenant(request, tenant)
    body, added = await save_agent(request, tenant_id, spec)
    return json_response(body, status=201 if added else 200)


async def save_agent(request: Request, tenant_id: int, spec: AgentSpec) -> tuple[dict[str, Any], bool]:
    """Save a spec as the agent's next version and bring its triggers in step; the agent object.

    An agent that can be started by a webhook gets a secret the first time: it is in this answer
    only (``webhook_secret``); ``POST /v1/agents/{name}/secret`` makes a new one.
    """
    state = state_of(request)
    stored, added = await call_store(state.agents.save, tenant_id, spec)
    await state.triggers.agent_saved(tenant_id, stored)
    if added:
        await state.learn.compiles.saved(tenant_id, spec, stored.version)
    body = _agent_object(stored, await call_store(state.accounts.tenant_names))
    store = TriggerStore(state.engine)
    if _takes_webhooks(spec) and not await call_store(store.has_secret, tenant_id, spec.name):
        body["webhook_secret"] = await call_store(store.new_secret, tenant_id, spec.name)
    return body, added


def _takes_webhooks(spec: AgentSpec) -> bool:
    return any(isinstance(t, WebhookTrigger) for t in spec.triggers)


async def new_secret(request: Request) -> Response:
    """POST /v1/agents/{name}/secret: a new webhook secret for the agent (the old one stops working)."""
    state = state_of(request)
    tenant_id = await one_tenant(request)
    stored = await call_store(state.agents.get, tenant_id, request.path_params["name"])
    if not _takes_webhooks(stored.spec):
        raise APIError(409, f"Agent '{stored.spec.name}' has no webhook trigger.", code="conflict")
    secret = await call_store(TriggerStore(state.engine).new_secret, tenant_id, stored.spec.name)
    return json_response({"object": "agent.secret", "agent": stored.spec.name, "webhook_secret": secret})


async def trigger_agent(request: Request) -> Response:
    """POST /v1/agents/{name}/trigger: a webhook starts the agent; the body is its input.

    The caller shows the agent's webhook secret (``Authorization: Bearer whs-...``) or an API key
    of the agent's tenant. An ``Idempotency-Key`` header makes a retried call start nothing new.
    """
    state = state_of(request)
    name = request.path_params["name"]
    token = (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()
    owner = await call_store(TriggerStore(state.engine).secret_owner, token) if token else None
    if owner is not None:
        tenant_id, agent = owner
        if agent != name:
            raise APIError(403, f"This secret starts agent '{agent}', not '{name}'.", type="permission_error")
    else:
        tenant_id = await one_tenant(request)
    stored = await call_store(state.agents.get, tenant_id, name)
    if not _takes_webhooks(stored.spec):
        raise APIError(
            409, f'Agent \'{name}\' has no webhook trigger; add {{"kind": "webhook"}}.', code="conflict"
        )
    raw = await request.body()
    if len(raw) > _MAX_WEBHOOK_BYTES:
        raise APIError(
            413, f"A webhook body may be at most {_MAX_WEBHOOK_BYTES} bytes.", code="request_too_large"
        )
    text = raw.decode("utf-8", errors="replace").strip() or "(an empty webhook call)"
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 40:
        raise bad_request("An Idempotency-Key header must be 1 to 40 characters.")
    spawn_key = (
        None
        if key is None
        else f"webhook:{hashlib.sha256(f'{tenant_id}:{name}:{key}'.encode()).hexdigest()[:48]}"
    )
    process = await call_store_async(
        state.kernel.spawn(
            tenant_id, name, f"A webhook call:\n\n{text}", spawn_key=spawn_key, origin="webhook"
        )
    )
    tenants = await call_store(state.accounts.tenant_names)
    return json_response(_process_object(process, tenants), status=202)


async def list_agents(request: Request) -> Response:
    """GET /v1/agents: the newest version of each of the caller's agents (the admin's: all)."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    tenant_id = await tenant_scope(state, principal, request.query_params.get("tenant"), "agents")
    stored = await call_store(state.agents.newest, tenant_id)
    tenants = await call_store(state.accounts.tenant_names)
    return json_response({"object": "list", "data": [_agent_object(s, tenants) for s in stored]})


async def get_agent(request: Request) -> Response:
    """GET /v1/agents/{name}: the newest version, or ``?version=N``."""
    state = state_of(request)
    tenant_id = await one_tenant(request)
    raw = request.query_params.get("version")
    message = "'version' must be a positive whole number."
    version = None if raw is None else whole_number_text(raw, "version", message)
    stored = await call_store(state.agents.get, tenant_id, request.path_params["name"], version)
    tenants = await call_store(state.accounts.tenant_names)
    return json_response(_agent_object(stored, tenants))


async def agent_versions(request: Request) -> Response:
    """GET /v1/agents/{name}/versions: every version, oldest first, each with its diff from the last."""
    state = state_of(request)
    tenant_id = await one_tenant(request)
    stored = await call_store(state.agents.versions, tenant_id, request.path_params["name"])
    tenants = await call_store(state.accounts.tenant_names)
    data = []
    for before, after in zip([None, *stored], stored, strict=False):
        diff = (
            None
            if before is None
            else spec_diff(before.spec, after.spec, f"v{before.version}", f"v{after.version}")
        )
        data.append({**_agent_object(after, tenants), "diff": diff})
    return json_response({"object": "list", "data": data})


async def agent_triggers(request: Request) -> Response:
    """GET /v1/agents/{name}/triggers: the newest version's timed triggers and when each fires next."""
    state = state_of(request)
    tenant_id = await one_tenant(request)
    stored = await call_store(state.agents.get, tenant_id, request.path_params["name"])
    rows = await call_store(TriggerStore(state.engine).of, tenant_id, stored.spec.name)
    data = [
        {
            "object": "agent.trigger",
            "position": r.position,
            "trigger": orjson.loads(r.definition),
            "next_at": None if r.next_at_us is None else r.next_at_us // 1_000_000,
            "last_fired_at": None if r.last_fired_at_us is None else r.last_fired_at_us // 1_000_000,
            "fired": r.fired,
        }
        for r in rows
    ]
    return json_response({"object": "list", "data": data})


async def one_tenant(request: Request) -> int:
    """The one tenant an agent lookup is for; the admin names it with ``?tenant=``."""
    return await named_tenant(request, request.query_params.get("tenant"))


async def named_tenant(request: Request, tenant: str | None) -> int:
    """A tenant key's own tenant, or the one the admin names (which the admin must)."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    tenant_id = await tenant_scope(state, principal, tenant, "agents")
    if tenant_id is None:
        raise bad_request("The admin key must name the agent's 'tenant'.", param="tenant")
    return tenant_id


def _process_object(p: ProcessRecord, tenants: dict[int, str]) -> dict[str, Any]:
    return {
        "object": "process",
        "pid": p.pid,
        "tenant": tenants.get(p.tenant_id),
        "agent": p.agent,
        "agent_version": p.agent_version,
        "parent_pid": p.parent_pid,
        "state": p.state,
        "reason": p.reason,
        "priority": p.priority,
        "steps": p.steps,
        "usage": {
            "prompt_tokens": p.prompt_tokens,
            "completion_tokens": p.completion_tokens,
            "cost_micro": p.cost_micro,
        },
        "input": p.input,
        "result": p.result,
        "created_at": p.created_at_us // 1_000_000,
        "updated_at": p.updated_at_us // 1_000_000,
    }


def _step_object(step: Step) -> dict[str, Any]:
    return {
        "object": "process.step",
        "seq": step.seq,
        "kind": step.kind,
        "at_us": step.created_at_us,
        **step.payload,
    }


async def start_process(request: Request) -> Response:
    """POST /v1/processes: run the newest version of ``agent`` on ``input``."""
    state = state_of(request)
    state.keyring.authenticate(request)
    body = json_object(await request.body(), "The body must be a JSON object with 'agent' and 'input'.")
    agent, text, tenant = body.get("agent"), body.get("input"), body.get("tenant")
    if not isinstance(agent, str) or not agent:
        raise bad_request("'agent' must name one of your agents.", param="agent")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("'input' must be the text the agent starts from.", param="input")
    if tenant is not None and not isinstance(tenant, str):
        raise bad_request("'tenant' must be a tenant's name.", param="tenant")
    tenant_id = await named_tenant(request, tenant)
    process = await call_store_async(state.kernel.spawn(tenant_id, agent, text))
    tenants = await call_store(state.accounts.tenant_names)
    return json_response(_process_object(process, tenants), status=201)


async def list_processes(request: Request) -> Response:
    """GET /v1/processes: the caller's processes, newest first (``?state=``, ``?agent=``, ``?limit=``)."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    params = request.query_params
    tenant_id = await tenant_scope(state, principal, params.get("tenant"), "processes")
    states = [s.strip() for s in (params.get("state") or "").split(",") if s.strip()] or None
    unknown = [s for s in states or () if s not in STATES]
    if unknown:
        raise bad_request(f"Unknown state(s) {', '.join(unknown)}; use {', '.join(STATES)}.", param="state")
    limit = query_number(request, "limit", 100, 1, 1000)
    found = await call_store(state.processes.find, tenant_id, states, limit, params.get("agent") or None)
    tenants = await call_store(state.accounts.tenant_names)
    return json_response({"object": "list", "data": [_process_object(p, tenants) for p in found]})


async def get_process(request: Request) -> Response:
    """GET /v1/processes/{pid}."""
    state = state_of(request)
    process = await call_store(state.processes.get, request.path_params["pid"], await owner(request))
    tenants = await call_store(state.accounts.tenant_names)
    return json_response(_process_object(process, tenants))


async def process_journal(request: Request) -> Response:
    """GET /v1/processes/{pid}/journal: its steps, in order (``?after=SEQ`` for the newer ones)."""
    state = state_of(request)
    pid = request.path_params["pid"]
    store = state.processes
    await call_store(store.get, pid, await owner(request))
    after = whole_number_text(
        request.query_params.get("after") or "0", "after", "'after' must be a step number."
    )
    steps = await call_store(store.journal, pid, after)
    return json_response({"object": "list", "data": [_step_object(s) for s in steps]})


async def signal_process(request: Request) -> Response:
    """POST /v1/processes/{pid}/pause|resume|kill."""
    state = state_of(request)
    signal = request.path_params["signal"]
    if signal not in ("pause", "resume", "kill"):
        raise bad_request(f"Unknown signal '{signal}'; use pause, resume or kill.", param="signal")
    process = await call_store_async(
        state.kernel.signal(request.path_params["pid"], await owner(request), signal)
    )
    tenants = await call_store(state.accounts.tenant_names)
    return json_response(_process_object(process, tenants))


async def list_approvals(request: Request) -> Response:
    """GET /v1/approvals: the calls waiting for a yes or no, across the caller's agents."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    tenant_id = await tenant_scope(state, principal, request.query_params.get("tenant"), "approvals")
    inbox = await call_store_async(state.kernel.approvals(tenant_id))
    tenants = await call_store(state.accounts.tenant_names)
    data = [
        {
            "object": "approval",
            "id": a.id,
            "pid": a.pid,
            "tenant": tenants.get(a.tenant_id),
            "agent": a.agent,
            "tool": a.tool,
            "arguments": a.arguments,
            "requested_at": a.requested_at_us // 1_000_000,
        }
        for a in inbox
    ]
    return json_response({"object": "list", "data": data})


async def decide_approval(request: Request) -> Response:
    """POST /v1/approvals/{id}/approve|deny: the process goes on with the decision."""
    state = state_of(request)
    decision = request.path_params["decision"]
    if decision not in ("approve", "deny"):
        raise bad_request(f"Unknown decision '{decision}'; use approve or deny.", param="decision")
    work = state.kernel.decide(request.path_params["id"], await owner(request), decision == "approve")
    process = await call_store_async(work)
    tenants = await call_store(state.accounts.tenant_names)
    return json_response(_process_object(process, tenants))


async def owner(request: Request) -> int | None:
    """The tenant whose processes the caller may reach: its own, or any for the admin key."""
    principal = state_of(request).keyring.authenticate(request)
    return None if principal.is_admin else principal.tenant_id


routes = [
    Route("/v1/approvals", list_approvals, methods=["GET"]),
    Route("/v1/approvals/{id}/{decision}", decide_approval, methods=["POST"]),
    Route("/v1/processes", start_process, methods=["POST"]),
    Route("/v1/processes", list_processes, methods=["GET"]),
    Route("/v1/processes/{pid}", get_process, methods=["GET"]),
    Route("/v1/processes/{pid}/journal", process_journal, methods=["GET"]),
    Route("/v1/processes/{pid}/{signal:signal}", signal_process, methods=["POST"]),
    Route("/v1/agents", list_agents, methods=["GET"]),
    Route("/v1/agents/{name}", get_agent, methods=["GET"]),
    Route("/v1/agents/{name}/versions", agent_versions, methods=["GET"]),
    Route("/v1/agents/{name}/triggers", agent_triggers, methods=["GET"]),
    Route("/v1/agents/{name}/secret", new_secret, methods=["POST"]),
    Route("/v1/agents/{name}/trigger", trigger_agent, methods=["POST"]),
]
