"""HTTP routes of the kernel's system calls: tools and their providers, the audit log, memory, notes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.api.agents import json_object, query_number, validated, whole_number_text
from aigrid.api.openai import json_response
from aigrid.api.scope import call_store, call_store_async, tenant_scope
from aigrid.api.state import state_of
from aigrid.config import ProviderConfig
from aigrid.errors import bad_request
from aigrid.kernel.providers.manager import ProviderStatus
from aigrid.store.inbox import InboxStore
from aigrid.store.memory import TENANT_WIDE, MemoryRecord, MemoryStore
from aigrid.store.provider_oauth import OAuthRecord, ProviderOAuthStore

_MAX_PROVIDER_BYTES = 64 << 10


async def _scope(request: Request, what: str) -> int | None:
    """The caller's tenant, or for the admin the one named by ``?tenant=`` (None: all)."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    return await tenant_scope(state, principal, request.query_params.get("tenant"), what)


async def list_tools(request: Request) -> Response:
    """GET /v1/tools: the tools the caller's agents can be granted, with their schemas."""
    state = state_of(request)
    tenant_id = await _scope(request, "tools")
    tenants = await call_store(state.accounts.tenant_names)
    data = [
        {
            "object": "tool",
            "name": r.tool.name,
            "called_as": r.tool.wire_name,
            "description": r.tool.description,
            "provider": r.provider or "builtin",
            "tenant": None if r.tenant_id is None else tenants.get(r.tenant_id),
            "parameters": r.tool.parameters,
        }
        for r in state.tools.visible(tenant_id)
    ]
    return json_response({"object": "list", "data": data})


def _auth_object(status: ProviderStatus, record: OAuthRecord | None) -> dict[str, Any] | None:
    """How the provider authenticates, and for OAuth whether it holds a token: never the secrets."""
    oauth = status.config.oauth
    if oauth is None:
        headers = status.config.headers
        return {"type": "header"} if any(h.lower() == "authorization" for h in headers) else None
    expires_at = None if record is None or record.expires_at_us is None else record.expires_at_us // 1_000_000
    has_client = record is not None and record.client is not None
    return {
        "type": "oauth",
        "grant": oauth.grant,
        "client": ("registered" if record.registered else "given") if record and has_client else "none",
        "client_id": oauth.client_id,
        "scope": oauth.scope,
        "issuer": oauth.issuer or (None if record is None else record.issuer),
        "authorised": record is not None and record.tokens is not None,
        "expires_at": expires_at,
    }


def _provider_object(status: ProviderStatus, record: OAuthRecord | None = None) -> dict[str, Any]:
    config = status.config.model_dump(mode="json", exclude_defaults=True)
    # Header and environment values are often secrets: their names are enough to show.
    for field in ("headers", "env"):
        if field in config:
            config[field] = dict.fromkeys(config[field], "***")
    if "client_secret" in config.get("oauth", {}):
        config["oauth"]["client_secret"] = "***"
    return {
        "object": "tool.provider",
        "name": status.config.name,
        "source": status.config.describe(),
        "origin": status.origin,
        "state": "down" if status.error else "up",
        "error": status.error,
        "tools": list(status.tools),
        "config": config,
        "auth": _auth_object(status, record),
    }


async def list_providers(request: Request) -> Response:
    """GET /admin/tools/providers: every provider, its tools, or why it is down."""
    state = state_of(request)
    state.keyring.require_admin(request)
    records = await call_store(ProviderOAuthStore(state.engine).all)
    data = [_provider_object(s, records.get(s.config.name)) for s in state.providers.statuses()]
    return json_response({"object": "list", "data": data})


async def add_provider(request: Request) -> Response:
    """POST /admin/tools/providers: open an MCP server or an OpenAPI service and keep it."""
    state = state_of(request)
    state.keyring.require_admin(request)
    raw = await request.body()
    if len(raw) > _MAX_PROVIDER_BYTES:
        raise bad_request(f"A provider may be described in at most {_MAX_PROVIDER_BYTES} bytes.")
    config = validated(
        ProviderConfig, json_object(raw, "The body must be a JSON object: a provider."), "provider"
    )
    status = await call_store_async(state.providers.add(config))
    record = await call_store(ProviderOAuthStore(state.engine).get, config.name)
    return json_response(_provider_object(status, record), status=201)


async def remove_provider(request: Request) -> Response:
    """DELETE /admin/tools/providers/{name}: close a run-time provider and forget it."""
    state = state_of(request)
    state.keyring.require_admin(request)
    name = request.path_params["name"]
    await call_store_async(state.providers.remove(name))
    return json_response({"object": "tool.provider", "name": name, "deleted": True})


async def login_provider(request: Request) -> Response:
    """POST /admin/tools/providers/{name}/login: start an admin's OAuth login; the URL to open."""
    state = state_of(request)
    state.keyring.require_admin(request)
    name = request.path_params["name"]
    url = await call_store_async(state.providers.login(name))
    return json_response({"object": "tool.provider.login", "name": name, "authorization_url": url})


async def finish_login(request: Request) -> Response:
    """POST /admin/tools/providers/{name}/login/callback: ``redirect_url``, where the browser was sent."""
    state = state_of(request)
    state.keyring.require_admin(request)
    name = request.path_params["name"]
    body = json_object(await request.body(), "The body must be a JSON object with 'redirect_url'.")
    redirect_url = body.get("redirect_url")
    if not isinstance(redirect_url, str) or not redirect_url.strip():
        raise bad_request(
            "'redirect_url' must be the address the browser was sent back to.", param="redirect_url"
        )
    status = await call_store_async(state.providers.finish_login(name, redirect_url.strip()))
    record = await call_store(ProviderOAuthStore(state.engine).get, name)
    return json_response(_provider_object(status, record))


async def audit_log(request: Request) -> Response:
    """GET /v1/audit: tool calls, newest first (``?pid=``, ``?limit=``)."""
    state = state_of(request)
    tenant_id = await _scope(request, "audit log")
    limit = query_number(request, "limit", 100, 1, 1000)
    records = await call_store(state.processes.audit, tenant_id, request.query_params.get("pid"), limit)
    tenants = await call_store(state.accounts.tenant_names)
    data = [
        {
            "object": "tool.call",
            "at_us": r.at_us,
            "tenant": tenants.get(r.tenant_id),
            "pid": r.pid,
            "agent": r.agent,
            "tool": r.tool,
            "arguments_sha256": r.arguments_sha256,
            "outcome": r.outcome,
        }
        for r in records
    ]
    return json_response({"object": "list", "data": data})


def _memory_object(record: MemoryRecord) -> dict[str, Any]:
    return {
        "object": "memory",
        "id": record.id,
        "agent": record.agent or None,
        "shared": record.agent == TENANT_WIDE,
        "key": record.key,
        "text": record.text,
        "updated_at": record.updated_at_us // 1_000_000,
    }


async def _one_tenant(request: Request, what: str) -> int:
    tenant_id = await _scope(request, what)
    if tenant_id is None:
        raise bad_request(f"The admin key must name the tenant of the {what} with ?tenant=.", param="tenant")
    return tenant_id


async def list_memory(request: Request) -> Response:
    """GET /v1/memory: ``?q=`` searches by words; otherwise the newest (``?agent=``, ``?limit=``)."""
    state = state_of(request)
    tenant_id = await _one_tenant(request, "memories")
    store = MemoryStore(state.engine)
    params = request.query_params
    limit = query_number(request, "limit", 50, 1, 500)
    agent = params.get("agent")
    if params.get("q") is not None:
        agents = None if agent is None else [agent, TENANT_WIDE]
        found = await call_store(store.search, tenant_id, params["q"], agents, limit)
    else:
        found = await call_store(store.recent, tenant_id, agent, limit)
    return json_response({"object": "list", "data": [_memory_object(m) for m in found]})


async def add_memory(request: Request) -> Response:
    """POST /v1/memory: remember a text for an agent (``agent``) or for all of them (none)."""
    state = state_of(request)
    tenant_id = await _one_tenant(request, "memories")
    body = json_object(await request.body(), "The body must be a JSON object with 'text'.")
    text, key, agent = body.get("text"), body.get("key"), body.get("agent")
    if not isinstance(text, str):
        raise bad_request("'text' must be the text to remember.", param="text")
    for name, value in (("key", key), ("agent", agent)):
        if value is not None and not isinstance(value, str):
            raise bad_request(f"'{name}' must be a string.", param=name)
    record = await call_store(MemoryStore(state.engine).write, tenant_id, agent or TENANT_WIDE, text, key)
    return json_response(_memory_object(record), status=201)


async def forget_memory(request: Request) -> Response:
    """DELETE /v1/memory/{id}."""
    state = state_of(request)
    tenant_id = await _one_tenant(request, "memories")
    memory_id = whole_number_text(request.path_params["id"], "id", "A memory id is a whole number.")
    await call_store(MemoryStore(state.engine).forget, tenant_id, memory_id)
    return json_response({"object": "memory", "id": memory_id, "deleted": True})


async def list_inbox(request: Request) -> Response:
    """GET /v1/inbox: agents' notes and unattended processes' results, oldest first (``?after=ID``)."""
    state = state_of(request)
    tenant_id = await _scope(request, "inbox")
    after = query_number(request, "after", 0, 0, 1 << 62)
    limit = query_number(request, "limit", 100, 1, 1000)
    messages = await call_store(InboxStore(state.engine).messages, tenant_id, after, limit)
    tenants = await call_store(state.accounts.tenant_names)
    data = [
        {
            "object": "inbox.message",
            "id": m.id,
            "tenant": tenants.get(m.tenant_id),
            "kind": m.kind,
            "pid": m.pid,
            "agent": m.agent,
            "text": m.text,
            "created_at": m.created_at_us // 1_000_000,
            "delivery": None
            if m.webhook is None
            else {
                "webhook": m.webhook,
                "attempts": m.attempts,
                "delivered_at": None if m.delivered_at_us is None else m.delivered_at_us // 1_000_000,
                "error": m.delivery_error,
            },
        }
        for m in messages
    ]
    return json_response({"object": "list", "data": data})


routes = [
    Route("/v1/tools", list_tools, methods=["GET"]),
    Route("/admin/tools/providers", list_providers, methods=["GET"]),
    Route("/admin/tools/providers", add_provider, methods=["POST"]),
    Route("/admin/tools/providers/{name}", remove_provider, methods=["DELETE"]),
    Route("/admin/tools/providers/{name}/login", login_provider, methods=["POST"]),
    Route("/admin/tools/providers/{name}/login/callback", finish_login, methods=["POST"]),
    Route("/v1/audit", audit_log, methods=["GET"]),
    Route("/v1/memory", list_memory, methods=["GET"]),
    Route("/v1/memory", add_memory, methods=["POST"]),
    Route("/v1/memory/{id}", forget_memory, methods=["DELETE"]),
    Route("/v1/inbox", list_inbox, methods=["GET"]),
]
