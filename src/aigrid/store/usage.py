"""Usage queries over the ledger: totals and time series, grouped as the caller asks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from aigrid.store.schema import LedgerEntry, Tenant

GROUPS = {
    "tenant": Tenant.name,
    "model": LedgerEntry.model,
    "deployment": LedgerEntry.deployment,
    "agent": LedgerEntry.agent,
    "process": LedgerEntry.process_id,
    "key": LedgerEntry.key_id,
    "endpoint": LedgerEntry.endpoint,
    "status": LedgerEntry.status,
}
STEPS_US = {"minute": 60_000_000, "hour": 3_600_000_000, "day": 86_400_000_000}
INTERVALS = (*STEPS_US, "month")
_SUMS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cost_micro")


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """What to sum, over which rows."""

    group_by: tuple[str, ...] = ()
    interval: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    tenant_id: int | None = None


def iso(us: int) -> str:
    """A UTC timestamp in ISO 8601."""
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat().replace("+00:00", "Z")


def money(micro: int) -> str:
    """Micro-units as a decimal currency amount."""
    return str((Decimal(micro) / Decimal(1_000_000)).quantize(Decimal("0.000001")))


def _month_start(us: int) -> int:
    day = datetime.fromtimestamp(us / 1e6, tz=UTC)
    return int(day.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() * 1_000_000)


def query_usage(engine: Engine, q: UsageQuery) -> dict[str, Any]:
    """Sum the ledger by groups and interval; rejected requests cost nothing and are left out."""
    columns: list[Any] = [GROUPS[g].label(g) for g in q.group_by]
    step = STEPS_US["day"] if q.interval == "month" else STEPS_US.get(q.interval or "")
    if step is not None:
        columns.insert(0, (LedgerEntry.created_at_us - LedgerEntry.created_at_us % step).label("bucket"))
    sums = [func.count().label("requests")] + [
        func.coalesce(func.sum(getattr(LedgerEntry, s)), 0).label(s) for s in _SUMS
    ]
    stmt = (
        select(*columns, *sums)
        .select_from(LedgerEntry)
        .join(Tenant, Tenant.id == LedgerEntry.tenant_id)
        .where(LedgerEntry.status != "rejected")
    )
    if q.tenant_id is not None:
        stmt = stmt.where(LedgerEntry.tenant_id == q.tenant_id)
    if q.since_us is not None:
        stmt = stmt.where(LedgerEntry.created_at_us >= q.since_us)
    if q.until_us is not None:
        stmt = stmt.where(LedgerEntry.created_at_us < q.until_us)
    if columns:
        stmt = stmt.group_by(*columns)
    with Session(engine) as session:
        raw = [dict(r._mapping) for r in session.execute(stmt)]
    if q.interval == "month":
        raw = _roll_up_months(raw, q.group_by)
    rows = sorted(raw, key=lambda r: tuple(str(r.get(k) or "") for k in ("bucket", *q.group_by)))
    data = [_present(r, q.group_by) for r in rows if r["requests"]]
    totals = {"requests": sum(r["requests"] for r in data)}
    for s in _SUMS:
        totals[s] = sum(int(r[s]) for r in data)
    totals["total_tokens"] = totals["prompt_tokens"] + totals["completion_tokens"]
    return {
        "object": "list",
        "group_by": list(q.group_by),
        "interval": q.interval,
        "data": data,
        "totals": {**totals, "cost": money(totals["cost_micro"])},
    }


def _roll_up_months(rows: list[dict[str, Any]], group_by: tuple[str, ...]) -> list[dict[str, Any]]:
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        month = _month_start(int(r["bucket"]))
        key = (month, *(r[g] for g in group_by))
        into = merged.setdefault(
            key, {"bucket": month, **{g: r[g] for g in group_by}, "requests": 0, **dict.fromkeys(_SUMS, 0)}
        )
        into["requests"] += r["requests"]
        for s in _SUMS:
            into[s] += int(r[s])
    return list(merged.values())


def _present(r: dict[str, Any], group_by: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "bucket" in r:
        out["start"] = iso(int(r["bucket"]))
        out["start_us"] = int(r["bucket"])
    for g in group_by:
        out[g] = r[g]
    out["requests"] = int(r["requests"])
    for s in _SUMS:
        out[s] = int(r[s])
    out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    out["cost"] = money(out["cost_micro"])
    return out


def agent_spent(engine: Engine, tenant_id: int, agent: str, since_us: int) -> tuple[int, int]:
    """Tokens and cost (micro-units) an agent of a tenant has used since ``since_us``."""
    stmt = select(
        func.coalesce(func.sum(LedgerEntry.prompt_tokens + LedgerEntry.completion_tokens), 0),
        func.coalesce(func.sum(LedgerEntry.cost_micro), 0),
    ).where(
        LedgerEntry.tenant_id == tenant_id,
        LedgerEntry.agent == agent,
        LedgerEntry.created_at_us >= since_us,
        LedgerEntry.status != "rejected",
    )
    with Session(engine) as session:
        tokens, cost = session.execute(stmt).one()
    return int(tokens), int(cost)
