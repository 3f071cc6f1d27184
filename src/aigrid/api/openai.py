"""The OpenAI-compatible endpoints besides the token ones (see hot_path): models, usage, health."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.api.agent_model import AGENT_PREFIX, agent_model, agent_models
from aigrid.api.scope import tenant_scope
from aigrid.api.state import state_of
from aigrid.errors import APIError, bad_request, not_found
from aigrid.store.usage import GROUPS, INTERVALS, UsageQuery, query_usage


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialized with orjson."""
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _model_objects(request: Request) -> list[dict[str, Any]]:
    models = []
    for route in state_of(request).grid.router.routes:
        tiers = sorted({d.backend.config.tier for d in route.deployments})
        for name in (route.config.name, *route.config.aliases):
            models.append({"id": name, "object": "model", "created": 0, "owned_by": "aigrid", "tiers": tiers})
    return models


async def list_models(request: Request) -> Response:
    """GET /v1/models: the grid's models, then the caller's agents as ``agent:NAME``."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    agents = await agent_models(state, principal)
    return json_response({"object": "list", "data": _model_objects(request) + agents})


async def get_model(request: Request) -> Response:
    """GET /v1/models/{model}."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    name = request.path_params["model"]
    if name.startswith(AGENT_PREFIX):
        agent = await agent_model(state, principal, name)
        if agent is not None:
            return json_response(agent)
    for obj in _model_objects(request):
        if obj["id"] == name:
            return json_response(obj)
    raise not_found(f"The model '{name}' does not exist.", code="model_not_found", param="model")


# 9999-12-31T23:59:59Z: the last second an ISO 8601 time can name.
_LAST_SECOND = 253_402_300_799


def parse_time(value: str | None, param: str) -> int | None:
    """An ISO 8601 time (naive means UTC) or epoch seconds, as integer microseconds."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # Also refuses inf and nan: no comparison with them holds.
        if not 0 <= seconds <= _LAST_SECOND:
            raise bad_request(
                f"'{param}' must be epoch seconds from 0 to {_LAST_SECOND} (the year 9999), not {value!r}.",
                param=param,
            )
        return int(seconds * 1_000_000)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise bad_request(
            f"'{param}' must be an ISO 8601 time or epoch seconds, not {value!r}.", param=param
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1_000_000)


async def usage(request: Request) -> Response:
    """GET /v1/usage: the caller's usage (the admin's: everyone's), grouped and bucketed."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    params = request.query_params
    group_by = tuple(g.strip() for g in (params.get("group_by") or "").split(",") if g.strip())
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise bad_request(
            f"Unknown group_by field(s) {', '.join(unknown)}; use {', '.join(GROUPS)}.", param="group_by"
        )
    interval = params.get("interval") or None
    if interval is not None and interval not in INTERVALS:
        raise bad_request(f"'interval' must be one of {', '.join(INTERVALS)}.", param="interval")
    tenant_id = await tenant_scope(state, principal, params.get("tenant"), "usage")
    query = UsageQuery(
        group_by=group_by,
        interval=interval,
        since_us=parse_time(params.get("since"), "since"),
        until_us=parse_time(params.get("until"), "until"),
        tenant_id=tenant_id,
    )
    await state.grid.ledger.flush()
    return json_response(await asyncio.to_thread(query_usage, state.engine, query))


async def healthz(request: Request) -> Response:
    """GET /healthz: the server is up and holds its cluster lease (503 when it does not: it takes no work)."""
    membership = state_of(request).membership
    owner = membership.current()
    if not membership.live:
        # A load balancer that checks this sends nothing to a server that lost its lease.
        raise APIError(
            503,
            f"Server '{membership.name}' does not hold its cluster lease and takes no work "
            f"(fenced {membership.fenced} time(s)).",
            type="server_error",
            code="not_live",
        )
    body = {
        "status": "ok",
        "node": membership.name,
        "epoch": owner.epoch if owner else None,
        "fenced": membership.fenced,
    }
    return json_response(body)


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    Route("/v1/usage", usage, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]
