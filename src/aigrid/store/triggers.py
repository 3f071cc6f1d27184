"""Agents' timed triggers with their next firing, and the secrets that let webhooks start agents.

Blocking calls. A trigger's row is replaced only when a saved version changes it, so editing an
agent's instructions does not reset when its schedule fires next.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.schema import AgentSecret, AgentTrigger

_SECRET_PREFIX = "whs-"


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    """A timed trigger as stored: whose, which, and when it fires next (None: never again)."""

    id: int
    tenant_id: int
    agent: str
    position: int
    definition: str
    next_at_us: int | None
    last_fired_at_us: int | None
    fired: int


@dataclass(frozen=True, slots=True)
class PlannedTrigger:
    """A trigger of a saved version: its place in the spec, its JSON, and its first firing."""

    position: int
    definition: str
    first_at_us: int | None


def _record(r: AgentTrigger) -> TriggerRecord:
    return TriggerRecord(
        r.id, r.tenant_id, r.agent, r.position, r.definition, r.next_at_us, r.last_fired_at_us, r.fired
    )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TriggerStore:
    """Keeps timed triggers in step with agents' newest versions, and webhook secrets."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def sync(self, tenant_id: int, agent: str, planned: list[PlannedTrigger]) -> None:
        """Make the agent's stored triggers these: unchanged ones keep their next firing."""
        with Session(self._engine) as session, session.begin():
            rows = session.scalars(
                select(AgentTrigger).where(AgentTrigger.tenant_id == tenant_id, AgentTrigger.agent == agent)
            ).all()
            kept = {(r.position, r.definition): r for r in rows}
            wanted = {(p.position, p.definition) for p in planned}
            for key, row in kept.items():
                if key not in wanted:
                    session.delete(row)
            session.flush()
            for plan in planned:
                if (plan.position, plan.definition) not in kept:
                    session.add(
                        AgentTrigger(
                            tenant_id=tenant_id,
                            agent=agent,
                            position=plan.position,
                            definition=plan.definition,
                            next_at_us=plan.first_at_us,
                            fired=0,
                        )
                    )

    def of(self, tenant_id: int, agent: str) -> list[TriggerRecord]:
        """An agent's timed triggers, in spec order."""
        query = (
            select(AgentTrigger)
            .where(AgentTrigger.tenant_id == tenant_id, AgentTrigger.agent == agent)
            .order_by(AgentTrigger.position)
        )
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query)]

    def due(self, now: int, limit: int = 1000) -> list[TriggerRecord]:
        """Triggers whose next firing is at or before ``now``, earliest first."""
        query = (
            select(AgentTrigger)
            .where(AgentTrigger.next_at_us.is_not(None), AgentTrigger.next_at_us <= now)
            .order_by(AgentTrigger.next_at_us)
            .limit(limit)
        )
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query)]

    def next_at(self) -> int | None:
        """When the earliest trigger fires next, if any does."""
        with Session(self._engine) as session:
            return session.scalar(select(func.min(AgentTrigger.next_at_us)))

    def advance(self, trigger_id: int, slot_us: int, next_at_us: int | None, fired: bool) -> bool:
        """Move a trigger past the slot it was due at; False if someone else already did."""
        values: dict[str, object] = {"next_at_us": next_at_us}
        if fired:
            values.update(last_fired_at_us=slot_us, fired=AgentTrigger.fired + 1)
        with Session(self._engine) as session, session.begin():
            moved = session.execute(
                update(AgentTrigger)
                .where(AgentTrigger.id == trigger_id, AgentTrigger.next_at_us == slot_us)
                .values(**values)
            )
            return bool(getattr(moved, "rowcount", 0))

    def forget(self, tenant_id: int, agent: str) -> None:
        """Drop an agent's triggers (it is gone)."""
        with Session(self._engine) as session, session.begin():
            session.execute(
                delete(AgentTrigger).where(AgentTrigger.tenant_id == tenant_id, AgentTrigger.agent == agent)
            )

    def new_secret(self, tenant_id: int, agent: str) -> str:
        """A new webhook secret for the agent, replacing any old one; shown once, kept as a digest."""
        secret = _SECRET_PREFIX + secrets.token_urlsafe(24)
        with Session(self._engine) as session, session.begin():
            row = session.get(AgentSecret, (tenant_id, agent))
            if row is None:
                session.add(
                    AgentSecret(
                        tenant_id=tenant_id, agent=agent, digest=_digest(secret), created_at_us=now_us()
                    )
                )
            else:
                row.digest, row.created_at_us = _digest(secret), now_us()
        return secret

    def has_secret(self, tenant_id: int, agent: str) -> bool:
        """Whether the agent has a webhook secret."""
        with Session(self._engine) as session:
            return session.get(AgentSecret, (tenant_id, agent)) is not None

    def secret_owner(self, secret: str) -> tuple[int, str] | None:
        """The (tenant, agent) a webhook secret belongs to, if any."""
        if not secret.startswith(_SECRET_PREFIX):
            return None
        with Session(self._engine) as session:
            row = session.scalar(select(AgentSecret).where(AgentSecret.digest == _digest(secret)))
            return None if row is None else (row.tenant_id, row.agent)
