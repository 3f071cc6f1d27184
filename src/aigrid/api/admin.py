"""The admin API under /admin/: tenants, keys, budgets, rate limits and deployment health."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonValue
from starlette.responses import Response

from aigrid.api.openai import json_response
from aigrid.api.scope import call_store, tenant_scope
from aigrid.api.state import AppState, state_of
from aigrid.store.accounts import Principal, digest
from aigrid.store.quota import budget_resource

Kind = Literal["tokens", "cost"]
Period = Literal["day", "month", "total"]


def _admin(request: Request) -> AppState:
    state = state_of(request)
    state.keyring.require_admin(request)
    return state


Admin = Annotated[AppState, Depends(_admin)]
router = APIRouter(prefix="/admin")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantIn(_Body):
    """A tenant to create."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")


class KeyIn(_Body):
    """A key to create for a tenant."""

    tenant: str
    name: str | None = Field(default=None, max_length=128)


# A positive decimal amount written out (no exponent), as `aigrid budget set` sends it.
_COST = r"^0*([1-9][0-9]*(\.[0-9]*)?|\.[0-9]*[1-9][0-9]*|0\.[0-9]*[1-9][0-9]*)$"
_ONE_AMOUNT: list[JsonValue] = [
    {"required": ["tokens"], "properties": {"tokens": {"type": "integer"}, "cost": {"type": "null"}}},
    {"required": ["cost"], "properties": {"cost": {"type": "string"}, "tokens": {"type": "null"}}},
]


# What the database columns hold: rates are 32-bit integers, budgets and their micro-units 64-bit.
MAX_RATE = 2**31 - 1
MAX_BUDGET = 2**62


class BudgetIn(_Body):
    """A budget: tokens, or a cost in currency units as a decimal string; exactly one of the two."""

    model_config = ConfigDict(json_schema_extra={"oneOf": _ONE_AMOUNT})

    tenant: str
    period: Period
    tokens: int | None = Field(default=None, gt=0, le=MAX_BUDGET)
    cost: str | None = Field(default=None, pattern=_COST, description="A positive decimal amount.")

    @model_validator(mode="after")
    def _one_amount(self) -> BudgetIn:
        if (self.tokens is None) == (self.cost is None):
            raise ValueError("Give exactly one of 'tokens' or 'cost'.")
        if self.cost is not None and _micro(self.cost) > MAX_BUDGET:
            raise ValueError(f"'cost' may be at most {MAX_BUDGET // 1_000_000} currency units.")
        return self


class LimitsIn(_Body):
    """Rate limits; null removes one."""

    tenant: str
    rpm: int | None = Field(default=None, gt=0, le=MAX_RATE)
    tpm: int | None = Field(default=None, gt=0, le=MAX_RATE)


@router.post("/tenants", status_code=201)
async def create_tenant(body: TenantIn, state: Admin) -> Response:
    """Create a tenant."""
    return json_response(await call_store(state.accounts.create_tenant, body.name), status=201)


@router.get("/tenants")
async def list_tenants(state: Admin) -> Response:
    """List tenants."""
    return json_response({"object": "list", "data": await call_store(state.accounts.list_tenants)})


@router.post("/keys", status_code=201)
async def create_key(body: KeyIn, state: Admin) -> Response:
    """Create a key; its secret is in the answer and nowhere else."""
    async with state.config_sync.changes:
        new = await call_store(state.accounts.create_key, body.tenant, body.name)
        state.keyring.add(digest(new.secret), Principal(new.tenant_id, new.tenant, new.id))
    return json_response(
        {
            "id": new.id,
            "key": new.secret,
            "tenant": new.tenant,
            "prefix": new.prefix,
            "name": new.name,
            "created_at_us": new.created_at_us,
        },
        status=201,
    )


@router.get("/keys")
async def list_keys(state: Admin, tenant: str | None = None) -> Response:
    """List keys without their secrets."""
    return json_response({"object": "list", "data": await call_store(state.accounts.list_keys, tenant)})


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, state: Admin) -> Response:
    """Revoke a key at once."""
    async with state.config_sync.changes:
        key_digest = await call_store(state.accounts.revoke_key, key_id)
        state.keyring.remove(key_digest)
    return json_response({"id": key_id, "revoked": True})


def _micro(cost: str) -> int:
    return int((Decimal(cost) * 1_000_000).to_integral_value())


def _budget_view(tenant: str, view: dict[str, object]) -> dict[str, object]:
    return {"tenant": tenant, **view}


async def budget_list(state: AppState, principal: Principal, tenant: str | None) -> dict[str, object]:
    """Budgets with what is spent and reserved in their current period, as far as ``principal`` may see."""
    tenant_id = await tenant_scope(state, principal, tenant, "budgets")
    names = await call_store(state.accounts.tenant_names)
    data = [
        _budget_view(name, b.view())
        for tid, name in sorted(names.items())
        if tenant_id is None or tid == tenant_id
        for b in state.grid.admission.budgets(tid)
    ]
    return {"object": "list", "data": data}


@router.put("/budgets")
async def set_budget(body: BudgetIn, state: Admin) -> Response:
    """Add or replace a tenant's budget for a period."""
    kind, limit = ("tokens", body.tokens) if body.tokens is not None else ("cost", _micro(body.cost or "0"))
    await state.grid.ledger.flush()
    async with state.config_sync.changes:
        tenant_id, spent = await call_store(state.accounts.set_budget, body.tenant, kind, body.period, limit)
        budget = state.grid.admission.set_budget(tenant_id, kind, body.period, limit, spent)
        leases = state.grid.admission.leases
        if leases is not None:
            # Setting a budget again is the admin's reset of the grants that lost servers left frozen.
            await call_store(leases.store.forget_dead, tenant_id, budget_resource(kind, body.period))
    return json_response(_budget_view(body.tenant, budget.view()))


@router.get("/budgets")
async def list_budgets(request: Request, tenant: str | None = None) -> Response:
    """Budgets with what is spent and reserved in the current period."""
    state = state_of(request)
    return json_response(await budget_list(state, state.keyring.require_admin(request), tenant))


@router.delete("/budgets")
async def remove_budget(
    state: Admin, tenant: str, kind: Annotated[Kind, Query()], period: Annotated[Period, Query()]
) -> Response:
    """Remove a budget."""
    async with state.config_sync.changes:
        tenant_id = await call_store(state.accounts.remove_budget, tenant, kind, period)
        state.grid.admission.remove_budget(tenant_id, kind, period)
    return json_response({"tenant": tenant, "kind": kind, "period": period, "removed": True})


@router.put("/limits")
async def set_limits(body: LimitsIn, state: Admin) -> Response:
    """Set a tenant's requests and tokens per minute."""
    async with state.config_sync.changes:
        tenant_id = await call_store(state.accounts.set_rate_limits, body.tenant, body.rpm, body.tpm)
        state.grid.admission.set_rate_limits(tenant_id, body.rpm, body.tpm)
    return json_response({"tenant": body.tenant, "rpm": body.rpm, "tpm": body.tpm})


@router.get("/limits")
async def list_limits(state: Admin, tenant: str | None = None) -> Response:
    """Rate limits of every tenant that has one."""
    names = await call_store(state.accounts.tenant_names)
    rows = await call_store(state.accounts.all_rate_limits)
    data = [
        {"tenant": names.get(tid), "rpm": rpm, "tpm": tpm}
        for tid, rpm, tpm in rows
        if tenant is None or names.get(tid) == tenant
    ]
    return json_response({"object": "list", "data": data})


@router.get("/deployments")
async def deployments(state: Admin) -> Response:
    """Every deployment's health, load and speed."""
    data = [
        {"model": route.name, **d.health()} for route in state.grid.router.routes for d in route.deployments
    ]
    return json_response({"object": "list", "data": data})
