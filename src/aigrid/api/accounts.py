"""What any key may ask about its own account: who it is, and its budgets against what is spent."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.api.admin import budget_list
from aigrid.api.openai import json_response
from aigrid.api.scope import call_store
from aigrid.api.state import state_of
from aigrid.store.payers import PayerStore


async def me(request: Request) -> Response:
    """GET /v1/me: the tenant and key behind the request's API key, whether it is the admin's, and
    the users it acts for besides itself (null for the admin, who acts for anyone)."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    users = None if principal.is_admin else await call_store(PayerStore(state.engine).users, principal.tenant)
    return json_response(
        {
            "object": "principal",
            "tenant": None if principal.is_admin else principal.tenant,
            "key_id": principal.key_id,
            "admin": principal.is_admin,
            "users": users,
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
