"""What any key may ask about its own account: who it is, and its budgets against what is spent."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.api.admin import budget_list
from aigrid.api.openai import json_response
from aigrid.api.state import state_of


async def me(request: Request) -> Response:
    """GET /v1/me: the tenant and key behind the request's API key, and whether it is the admin's."""
    principal = state_of(request).keyring.authenticate(request)
    return json_response(
        {
            "object": "principal",
            "tenant": None if principal.is_admin else principal.tenant,
            "key_id": principal.key_id,
            "admin": principal.is_admin,
        }
    )


async def budgets(request: Request) -> Response:
    """GET /v1/budgets: the caller's budgets this period (the admin's: everyone's, or ``?tenant=``)."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    return json_response(await budget_list(state, principal, request.query_params.get("tenant")))


routes = [
    Route("/v1/me", me, methods=["GET"]),
    Route("/v1/budgets", budgets, methods=["GET"]),
]
