"""Whom a request acts for, and store calls off the event loop with their errors in the API's shape."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aigrid.api.state import AppState
from aigrid.errors import APIError, not_found
from aigrid.store.accounts import AccountError, Principal

T = TypeVar("T")


def api_error_for(status: int, message: str) -> APIError:
    """An account error in the OpenAI shape."""
    codes = {403: "forbidden", 404: "not_found", 409: "conflict", 503: "not_live"}
    if status == 403:
        return APIError(status, message, type="permission_error", code=codes[status])
    return APIError(status, message, code=codes.get(status))


async def call_store(fn: Callable[..., T], *args: object) -> T:
    """Run a blocking store call on a worker thread; its refusals become API errors."""
    try:
        return await asyncio.to_thread(fn, *args)
    except AccountError as exc:
        raise api_error_for(exc.status, exc.message) from exc


async def call_store_async(work: Awaitable[T]) -> T:
    """Await work that reaches the stores itself; its refusals become API errors."""
    try:
        return await work
    except AccountError as exc:
        raise api_error_for(exc.status, exc.message) from exc


async def tenant_scope(state: AppState, principal: Principal, tenant: str | None, what: str) -> int | None:
    """The tenant a request acts for: a tenant key's own; the admin's named tenant, or None for all.

    A tenant key that names another tenant gets a 403 saying it can only reach its own ``what``.
    """
    if not principal.is_admin:
        if tenant and tenant != principal.tenant:
            raise APIError(403, f"A tenant key can only reach its own {what}.", type="permission_error")
        return principal.tenant_id
    if not tenant:
        return None
    names = await asyncio.to_thread(state.accounts.tenant_names)
    ids = [tid for tid, name in names.items() if name == tenant]
    if not ids:
        raise not_found(f"No tenant named '{tenant}'.", param="tenant")
    return ids[0]
