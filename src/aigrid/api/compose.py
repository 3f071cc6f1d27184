"""HTTP routes that write agents from sentences: ``POST /v1/agents`` with a ``description``, and edits.

With ``"dry_run": true`` the draft comes back unsaved (the CLI shows it and asks before saving);
otherwise it is saved as a version at once. A description the compiler cannot make into a valid
spec is a 422 saying why; nothing broken is saved.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.api.agents import MAX_SPEC_BYTES, json_object, named_tenant, one_tenant, save_agent, save_spec
from aigrid.api.openai import json_response
from aigrid.api.scope import call_store
from aigrid.api.state import state_of
from aigrid.errors import APIError, bad_request
from aigrid.kernel.compiler import CompileError, Draft
from aigrid.kernel.triggers import utc_now


def _options(body: dict[str, Any], text_field: str) -> tuple[str, str, bool]:
    text, timezone, dry_run = body.get(text_field), body.get("timezone", "UTC"), body.get("dry_run", False)
    if not isinstance(text, str) or not text.strip():
        raise bad_request(
            f"'{text_field}' must say in a sentence what the agent should do.", param=text_field
        )
    if not isinstance(timezone, str):
        raise bad_request("'timezone' must be a time zone name such as Asia/Shanghai.", param="timezone")
    if not isinstance(dry_run, bool):
        raise bad_request("'dry_run' must be true or false.", param="dry_run")
    return text, timezone, dry_run


def _draft_object(draft: Draft) -> dict[str, Any]:
    return {
        "object": "agent.draft",
        "spec": draft.spec.model_dump(mode="json"),
        "text": draft.text,
        "notes": list(draft.notes),
        "diff": draft.diff,
    }


def _refused(exc: CompileError) -> APIError:
    return APIError(422, f"Could not compile the agent: {exc.message}", code="compile_failed")


async def create_agent(request: Request) -> Response:
    """POST /v1/agents: a spec stored as the agent's next version, or a ``description`` compiled first."""
    state_of(request).keyring.authenticate(request)  # a stranger gets 401 before the body is read
    raw = await request.body()
    if len(raw) <= MAX_SPEC_BYTES:
        body = json_object(raw, "The body must be a JSON object: an agent spec, or a description.")
        if "description" in body and "instructions" not in body:
            return await create_described(request, body)
    return await save_spec(request, raw)


async def create_described(request: Request, body: dict[str, Any]) -> Response:
    """POST /v1/agents with a ``description`` (and no ``instructions``): compile it, then save it."""
    state = state_of(request)
    description, timezone, dry_run = _options(body, "description")
    tenant = body.get("tenant")
    if tenant is not None and not isinstance(tenant, str):
        raise bad_request("'tenant' must be a tenant's name.", param="tenant")
    tenant_id = await named_tenant(request, tenant)
    taken = {s.spec.name for s in await call_store(state.agents.newest, tenant_id)}
    tools = [r.tool for r in state.tools.visible(tenant_id)]
    try:
        draft = await state.compiler.compile(tenant_id, description, tools, utc_now(), timezone, taken)
    except CompileError as exc:
        await state.learn.compiles.refused(tenant_id, description, exc.message)
        raise _refused(exc) from exc
    await state.learn.compiles.compiled(tenant_id, description, draft)
    if dry_run:
        return json_response(_draft_object(draft))
    saved, _ = await save_agent(request, tenant_id, draft.spec)
    return json_response({**saved, "draft": _draft_object(draft)}, status=201)


async def edit_agent(request: Request) -> Response:
    """POST /v1/agents/{name}/edit: a change in words becomes the agent's next version (or a draft)."""
    state = state_of(request)
    tenant_id = await one_tenant(request)
    change, timezone, dry_run = _options(
        json_object(await request.body(), "The body must be a JSON object."), "change"
    )
    current = await call_store(state.agents.get, tenant_id, request.path_params["name"])
    tools = [r.tool for r in state.tools.visible(tenant_id)]
    try:
        draft = await state.compiler.edit(tenant_id, current.spec, change, tools, utc_now(), timezone)
    except CompileError as exc:
        raise _refused(exc) from exc
    if dry_run:
        return json_response({**_draft_object(draft), "version": current.version})
    saved, _ = await save_agent(request, tenant_id, draft.spec)
    return json_response({**saved, "draft": _draft_object(draft)}, status=201)


routes = [
    Route("/v1/agents", create_agent, methods=["POST"]),
    Route("/v1/agents/{name}/edit", edit_agent, methods=["POST"]),
]
