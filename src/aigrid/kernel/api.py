"""HTTP routes of the kernel: agent specs and their versions under /v1/agents."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.errors import bad_request
from aigrid.grid.api.openai_routes import json_response
from aigrid.grid.api.scope import call_store, tenant_scope
from aigrid.grid.api.state import state_of
from aigrid.kernel.spec import AgentSpec
from aigrid.store.agents import AgentStore, StoredSpec

_MAX_SPEC_BYTES = 1 << 20


def _agent_object(stored: StoredSpec, tenants: dict[int, str]) -> dict[str, Any]:
    return {
        "object": "agent",
        "name": stored.spec.name,
        "version": stored.version,
        "tenant": tenants.get(stored.tenant_id),
        "created_at": stored.created_at_us // 1_000_000,
        "spec": stored.spec.model_dump(mode="json"),
    }


def _spec_from(raw: bytes) -> tuple[AgentSpec, str | None]:
    """The spec in a request body, and the tenant it names (the admin's way to choose one)."""
    if len(raw) > _MAX_SPEC_BYTES:
        raise bad_request(f"An agent spec may be at most {_MAX_SPEC_BYTES} bytes.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object: an agent spec.")
    tenant = body.pop("tenant", None)
    if tenant is not None and not isinstance(tenant, str):
        raise bad_request("'tenant' must be a tenant's name.", param="tenant")
    try:
        return AgentSpec.model_validate(body), tenant
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = str(first["msg"]).removeprefix("Value error, ")
        raise bad_request(f"Invalid agent spec: {param}: {message}", param=param) from exc


async def create_agent(request: Request) -> Response:
    """POST /v1/agents: store a spec as the agent's next version (200 when nothing changed)."""
    state = state_of(request)
    state.keyring.authenticate(request)  # a stranger gets 401 before the body is read
    spec, tenant = _spec_from(await request.body())
    tenant_id = await _named_tenant(request, tenant)
    stored, added = await call_store(AgentStore(state.engine).save, tenant_id, spec)
    tenants = await call_store(state.accounts.tenant_names)
    return json_response(_agent_object(stored, tenants), status=201 if added else 200)


async def list_agents(request: Request) -> Response:
    """GET /v1/agents: the newest version of each of the caller's agents (the admin's: all)."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    tenant_id = await tenant_scope(state, principal, request.query_params.get("tenant"), "agents")
    stored = await call_store(AgentStore(state.engine).newest, tenant_id)
    tenants = await call_store(state.accounts.tenant_names)
    return json_response({"object": "list", "data": [_agent_object(s, tenants) for s in stored]})


async def get_agent(request: Request) -> Response:
    """GET /v1/agents/{name}: the newest version, or ``?version=N``."""
    state = state_of(request)
    tenant_id = await _one_tenant(request)
    raw = request.query_params.get("version")
    if raw is not None and not raw.isdigit():
        raise bad_request("'version' must be a positive whole number.", param="version")
    version = int(raw) if raw is not None else None
    stored = await call_store(AgentStore(state.engine).get, tenant_id, request.path_params["name"], version)
    tenants = await call_store(state.accounts.tenant_names)
    return json_response(_agent_object(stored, tenants))


async def agent_versions(request: Request) -> Response:
    """GET /v1/agents/{name}/versions: every version, oldest first."""
    state = state_of(request)
    tenant_id = await _one_tenant(request)
    stored = await call_store(AgentStore(state.engine).versions, tenant_id, request.path_params["name"])
    tenants = await call_store(state.accounts.tenant_names)
    return json_response({"object": "list", "data": [_agent_object(s, tenants) for s in stored]})


async def _one_tenant(request: Request) -> int:
    """The one tenant an agent lookup is for; the admin names it with ``?tenant=``."""
    return await _named_tenant(request, request.query_params.get("tenant"))


async def _named_tenant(request: Request, tenant: str | None) -> int:
    """A tenant key's own tenant, or the one the admin names (which the admin must)."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    tenant_id = await tenant_scope(state, principal, tenant, "agents")
    if tenant_id is None:
        raise bad_request("The admin key must name the agent's 'tenant'.", param="tenant")
    return tenant_id


routes = [
    Route("/v1/agents", create_agent, methods=["POST"]),
    Route("/v1/agents", list_agents, methods=["GET"]),
    Route("/v1/agents/{name}", get_agent, methods=["GET"]),
    Route("/v1/agents/{name}/versions", agent_versions, methods=["GET"]),
]
