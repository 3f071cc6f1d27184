"""The admin API for payer identity: which end users a tenant acts for (whose wallet its entries
pay from, whose account its agents may ask a shared service about)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.responses import Response

from aigrid.api.admin import Admin
from aigrid.api.openai import json_response
from aigrid.api.scope import call_store
from aigrid.store.payers import PayerStore

router = APIRouter(prefix="/admin/tenants/{tenant}/users")
UserName = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")]


def _listing(tenant: str, users: list[str]) -> dict[str, object]:
    return {"object": "list", "tenant": tenant, "data": [{"object": "user", "user": u} for u in users]}


@router.get("")
async def list_users(tenant: str, state: Admin) -> Response:
    """The users a tenant acts for besides itself."""
    return json_response(_listing(tenant, await call_store(PayerStore(state.engine).users, tenant)))


@router.put("/{user}")
async def add_user(tenant: str, user: UserName, state: Admin) -> Response:
    """Let a tenant act for a user: 201 when added, 200 when it already did."""
    added = await call_store(PayerStore(state.engine).add, tenant, user)
    return json_response({"object": "user", "tenant": tenant, "user": user}, status=201 if added else 200)


@router.delete("/{user}")
async def remove_user(tenant: str, user: UserName, state: Admin) -> Response:
    """Stop a tenant acting for a user (its entries already confirmed go on)."""
    await call_store(PayerStore(state.engine).remove, tenant, user)
    return json_response({"object": "user", "tenant": tenant, "user": user, "deleted": True})
