"""Quota grants: slices of a tenant's budget or rate that a node leases, so it can admit locally.

A node (an ``Owner``: node id and epoch) takes a grant in one short transaction that locks the
pool's row (the budget's or the rate limit's; ``SELECT ... FOR UPDATE`` on PostgreSQL, the write
lock on SQLite) and checks, for a budget::

    spent (the ledger, this period) + Σ outstanding of counted grants + new grant ≤ limit

where a grant's *outstanding* part is what its owner was granted less what the ledger already
records for that owner this period (never below 0). A node consumes at most what it was granted,
so everything it may still consume without it being in the ledger is counted. Counted are live
owners' grants; in strict mode also those of owners whose lease ended (frozen until the period
ends or an admin resets the budget), otherwise they are reclaimed: what the dead node spent is in
the ledger, and at most its outstanding part (capped per grant by the caller) can be overspent.

Rates lease slices of a fixed window (``window_s``, aligned on the database's clock): the sum of
the window's grants, live or not, never exceeds the rate's allowance for the window.

Nothing here is a counter of its own: consumption is always read from the ledger (keyed by
request id), so the grants can be dropped and rebuilt at any time without losing a token.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from aigrid.clock import period_start_us
from aigrid.store.cluster import Owner, db_now_us, fence_check
from aigrid.store.db import write_lock
from aigrid.store.schema import Budget, ClusterNode, LedgerEntry, QuotaGrant, RateLimit

RATES = ("rpm", "tpm")


def budget_resource(kind: str, period: str) -> str:
    """The grant resource name of a budget, e.g. ``tokens:day``."""
    return f"{kind}:{period}"


@dataclass(frozen=True)
class Grant:
    """A node's grant after an acquire: its total for the window and what the pool has left."""

    granted: int
    start_us: int
    end_us: int
    now_us: int
    remaining: int
    limit: int
    # What the ledger already records of the owner's use in the period (budgets; 0 for rates).
    owner_spent: int = 0


@dataclass(frozen=True)
class GrantRow:
    """One stored grant, as tests and operators see it."""

    node_id: int
    node_epoch: int
    window_start_us: int
    granted: int


def window_allowance(per_minute: int, window_s: float) -> int:
    """What a rate of ``per_minute`` allows in one window of ``window_s`` seconds (at least 1)."""
    return max(1, int(per_minute * window_s / 60.0))


class QuotaStore:
    """Takes, hands back and lists quota grants; every method is blocking (call it off the event loop)."""

    def __init__(self, engine: Engine, *, strict: bool = False, window_s: float = 60.0) -> None:
        self.engine = engine
        self.strict = strict
        self.window_s = window_s
        self._pg = engine.dialect.name == "postgresql"

    def _now(self, conn: Connection) -> int:
        return int(conn.execute(select(db_now_us(self.engine))).scalar_one())

    def _upsert(
        self, conn: Connection, owner: Owner, tenant_id: int, resource: str, start: int, add: int, now: int
    ) -> int:
        """Raise the owner's grant by ``add`` (creating it); returns the new total."""
        values = {
            "tenant_id": tenant_id,
            "resource": resource,
            "window_start_us": start,
            "node_id": owner.node_id,
            "node_epoch": owner.epoch,
            "granted": add,
            "updated_at_us": now,
        }
        insert = postgresql.insert(QuotaGrant) if self._pg else sqlite.insert(QuotaGrant)
        stmt = insert.values(values).on_conflict_do_update(
            index_elements=["tenant_id", "resource", "window_start_us", "node_id", "node_epoch"],
            set_={"granted": QuotaGrant.granted + add, "updated_at_us": now},
        )
        conn.execute(stmt)
        return int(
            conn.execute(
                select(QuotaGrant.granted).where(
                    QuotaGrant.tenant_id == tenant_id,
                    QuotaGrant.resource == resource,
                    QuotaGrant.window_start_us == start,
                    QuotaGrant.node_id == owner.node_id,
                    QuotaGrant.node_epoch == owner.epoch,
                )
            ).scalar_one()
        )

    def _grants(
        self, conn: Connection, tenant_id: int, resource: str, start: int, now: int
    ) -> list[tuple[int, int, int, bool]]:
        """The window's grants as (node id, epoch, granted, owner live)."""
        live = and_(ClusterNode.epoch == QuotaGrant.node_epoch, ClusterNode.lease_until_us > now)
        rows = conn.execute(
            select(QuotaGrant.node_id, QuotaGrant.node_epoch, QuotaGrant.granted, live.label("live"))
            .select_from(QuotaGrant)
            .outerjoin(ClusterNode, ClusterNode.id == QuotaGrant.node_id)
            .where(
                QuotaGrant.tenant_id == tenant_id,
                QuotaGrant.resource == resource,
                QuotaGrant.window_start_us == start,
            )
        ).all()
        return [(r.node_id, r.node_epoch, r.granted, bool(r.live)) for r in rows]

    def _prune(self, conn: Connection, tenant_id: int, resource: str, start: int) -> None:
        """Grants of earlier periods or windows count for nothing any more."""
        conn.execute(
            delete(QuotaGrant).where(
                QuotaGrant.tenant_id == tenant_id,
                QuotaGrant.resource == resource,
                QuotaGrant.window_start_us < start,
            )
        )

    def acquire_budget(
        self, owner: Owner, tenant_id: int, kind: str, period: str, want: int, cap: int
    ) -> Grant | None:
        """Raise ``owner``'s grant of a budget by up to ``want`` (its outstanding part stays ≤ ``cap``).

        None when the tenant has no such budget. Raises ``Fenced`` when ``owner`` holds no live lease.
        """
        resource = budget_resource(kind, period)
        with write_lock(self.engine), self.engine.begin() as conn:
            fence_check(conn, owner)
            limit = conn.execute(
                select(Budget.limit_value)
                .where(Budget.tenant_id == tenant_id, Budget.kind == kind, Budget.period == period)
                .with_for_update()
            ).scalar()
            if limit is None:
                return None
            now = self._now(conn)
            start = period_start_us(period, now)
            self._prune(conn, tenant_id, resource, start)
            column = (
                LedgerEntry.prompt_tokens + LedgerEntry.completion_tokens
                if kind == "tokens"
                else LedgerEntry.cost_micro
            )
            by_owner: dict[tuple[int | None, int | None], int] = {
                (r.node_id, r.node_epoch): int(r.spent or 0)
                for r in conn.execute(
                    select(LedgerEntry.node_id, LedgerEntry.node_epoch, func.sum(column).label("spent"))
                    .where(LedgerEntry.tenant_id == tenant_id, LedgerEntry.created_at_us >= start)
                    .group_by(LedgerEntry.node_id, LedgerEntry.node_epoch)
                )
            }
            spent = sum(by_owner.values())
            counted = 0
            mine = 0
            for node_id, epoch, granted, live in self._grants(conn, tenant_id, resource, start, now):
                outstanding = max(0, granted - by_owner.get((node_id, epoch), 0))
                if (node_id, epoch) == (owner.node_id, owner.epoch):
                    mine = outstanding
                if live or self.strict:
                    counted += outstanding
            free = limit - spent - counted
            give = max(0, min(want, free, cap - mine))
            total = self._upsert(conn, owner, tenant_id, resource, start, give, now)
            spent_here = by_owner.get((owner.node_id, owner.epoch), 0)
            return Grant(total, start, 0, now, max(0, free - give), int(limit), spent_here)

    def acquire_rate(self, owner: Owner, tenant_id: int, which: str, want: int) -> Grant | None:
        """Raise ``owner``'s slice of the current window of a rate (``rpm`` or ``tpm``) by up to ``want``.

        None when the tenant has no such rate. Raises ``Fenced`` when ``owner`` holds no live lease.
        """
        if which not in RATES:
            raise ValueError(f"unknown rate {which!r}")
        with write_lock(self.engine), self.engine.begin() as conn:
            fence_check(conn, owner)
            row = conn.execute(
                select(RateLimit.rpm, RateLimit.tpm).where(RateLimit.tenant_id == tenant_id).with_for_update()
            ).first()
            per_minute = None if row is None else (row.rpm if which == "rpm" else row.tpm)
            if not per_minute:
                return None
            limit = window_allowance(per_minute, self.window_s)
            now = self._now(conn)
            window_us = int(self.window_s * 1_000_000)
            start = now - now % window_us
            self._prune(conn, tenant_id, which, start)
            # Every grant of the window counts, a dead owner's too: it may have admitted all of it.
            taken = sum(g[2] for g in self._grants(conn, tenant_id, which, start, now))
            give = max(0, min(want, limit - taken))
            total = self._upsert(conn, owner, tenant_id, which, start, give, now)
            return Grant(total, start, start + window_us, now, limit - taken - give, limit)

    def release(self, owner: Owner, tenant_id: int, resource: str, start_us: int, used: int) -> None:
        """Hand back what ``owner`` did not use of a grant: its total falls to ``used`` (idempotent)."""
        with write_lock(self.engine), self.engine.begin() as conn:
            conn.execute(
                update(QuotaGrant)
                .where(
                    QuotaGrant.tenant_id == tenant_id,
                    QuotaGrant.resource == resource,
                    QuotaGrant.window_start_us == start_us,
                    QuotaGrant.node_id == owner.node_id,
                    QuotaGrant.node_epoch == owner.epoch,
                    QuotaGrant.granted > used,
                )
                .values(granted=max(0, used))
            )

    def forget_dead(self, tenant_id: int, resource: str) -> int:
        """Drop the grants of owners whose lease ended (an admin's reset of frozen ones); returns how many."""
        with write_lock(self.engine), self.engine.begin() as conn:
            now = self._now(conn)
            dead = [
                (node_id, epoch)
                for node_id, epoch, _granted, live in self._all_grants(conn, tenant_id, resource, now)
                if not live
            ]
            for node_id, epoch in dead:
                conn.execute(
                    delete(QuotaGrant).where(
                        QuotaGrant.tenant_id == tenant_id,
                        QuotaGrant.resource == resource,
                        QuotaGrant.node_id == node_id,
                        QuotaGrant.node_epoch == epoch,
                    )
                )
            return len(dead)

    def _all_grants(
        self, conn: Connection, tenant_id: int, resource: str, now: int
    ) -> list[tuple[int, int, int, bool]]:
        starts = conn.execute(
            select(QuotaGrant.window_start_us)
            .where(QuotaGrant.tenant_id == tenant_id, QuotaGrant.resource == resource)
            .distinct()
        ).scalars()
        return [g for start in list(starts) for g in self._grants(conn, tenant_id, resource, start, now)]

    def grants(self, tenant_id: int, resource: str) -> list[GrantRow]:
        """Every stored grant of a tenant's resource."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    QuotaGrant.node_id, QuotaGrant.node_epoch, QuotaGrant.window_start_us, QuotaGrant.granted
                )
                .where(QuotaGrant.tenant_id == tenant_id, QuotaGrant.resource == resource)
                .order_by(QuotaGrant.node_id, QuotaGrant.node_epoch)
            ).all()
            return [GrantRow(r.node_id, r.node_epoch, r.window_start_us, r.granted) for r in rows]
