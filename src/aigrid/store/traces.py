"""Traces: one row per task a model worked on (an entry's plan, a compile, a process); blocking calls.

A trace is opened when the work starts (``pending``) and closed with its outcome: ``success`` when
the world agrees the task was done (a saga that ended done, a spec that validated and was saved,
a process that answered), ``failure`` with the reason otherwise. The same subject is traced once:
writing it again updates the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.schema import TraceRow

TraceKind = Literal["entry", "compile", "process"]
TRACE_KINDS: tuple[str, ...] = get_args(TraceKind)
Outcome = Literal["pending", "success", "failure"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
_MAX_REASON = 1000


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One task's trace."""

    id: int
    tenant_id: int
    kind: str
    subject: str
    input: str
    messages: list[dict[str, Any]] | None
    answer: str | None
    tools: list[str]
    model: str | None
    outcome: str
    reason: str | None
    cost_micro: int
    latency_us: int | None
    created_at_us: int
    updated_at_us: int

    def to_json(self) -> dict[str, Any]:
        """The trace as the API shows it."""
        return {
            "id": self.id,
            "object": "trace",
            "kind": self.kind,
            "subject": self.subject,
            "input": self.input,
            "messages": self.messages,
            "answer": self.answer,
            "tools": self.tools,
            "model": self.model,
            "outcome": self.outcome,
            "reason": self.reason,
            "cost": self.cost_micro / 1_000_000,
            "latency_s": None if self.latency_us is None else self.latency_us / 1_000_000,
            "created_at": self.created_at_us // 1_000_000,
            "updated_at": self.updated_at_us // 1_000_000,
        }


def _record(row: TraceRow) -> TraceRecord:
    return TraceRecord(
        row.id,
        row.tenant_id,
        row.kind,
        row.subject,
        row.input,
        None if row.messages is None else list(orjson.loads(row.messages)),
        row.answer,
        list(orjson.loads(row.tools)),
        row.model,
        row.outcome,
        row.reason,
        row.cost_micro,
        row.latency_us,
        row.created_at_us,
        row.updated_at_us,
    )


class TraceStore:
    """Writes and reads traces."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(
        self,
        tenant_id: int,
        kind: TraceKind,
        subject: str,
        text: str,
        *,
        outcome: Outcome,
        messages: list[dict[str, Any]] | None = None,
        answer: str | None = None,
        tools: list[str] | None = None,
        model: str | None = None,
        reason: str | None = None,
        cost_micro: int = 0,
        latency_us: int | None = None,
    ) -> TraceRecord:
        """Write the trace of ``subject`` (a second write replaces what the first said)."""
        now = now_us()
        with Session(self._engine) as session, session.begin():
            row = session.scalar(
                select(TraceRow).where(TraceRow.kind == kind, TraceRow.subject == subject).with_for_update()
            )
            if row is None:
                row = TraceRow(tenant_id=tenant_id, kind=kind, subject=subject, created_at_us=now)
                session.add(row)
            row.input = text
            row.messages = None if messages is None else orjson.dumps(messages).decode()
            row.answer = answer
            row.tools = orjson.dumps(tools or []).decode()
            row.model = model
            row.outcome = outcome
            row.reason = None if reason is None else reason[:_MAX_REASON]
            row.cost_micro = cost_micro
            row.latency_us = latency_us
            row.updated_at_us = now
            session.flush()
            return _record(row)

    def close(self, kind: TraceKind, subject: str, outcome: Outcome, reason: str | None = None) -> None:
        """Set how the traced task ended; nothing when it was never traced."""
        with Session(self._engine) as session, session.begin():
            row = session.scalar(
                select(TraceRow).where(TraceRow.kind == kind, TraceRow.subject == subject).with_for_update()
            )
            if row is not None:
                row.outcome = outcome
                row.reason = None if reason is None else reason[:_MAX_REASON]
                row.updated_at_us = now_us()

    def find(self, kind: TraceKind, subject: str) -> TraceRecord | None:
        """The trace of ``subject``, if there is one."""
        with Session(self._engine) as session:
            row = session.scalar(select(TraceRow).where(TraceRow.kind == kind, TraceRow.subject == subject))
            return None if row is None else _record(row)

    def get(self, trace_id: int, tenant_id: int | None) -> TraceRecord:
        """The trace, if the tenant owns it (any tenant's for None); 404 otherwise."""
        with Session(self._engine) as session:
            row = session.get(TraceRow, trace_id)
            if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
                raise AccountError(404, f"No trace {trace_id}.")
            return _record(row)

    def count(self, kind: str, outcome: str) -> int:
        """How many traces of a kind ended with an outcome, every tenant's."""
        query = select(func.count()).where(TraceRow.kind == kind, TraceRow.outcome == outcome)
        with Session(self._engine) as session:
            return int(session.scalar(query) or 0)

    def recent(
        self,
        tenant_id: int | None,
        kind: str | None = None,
        outcome: str | None = None,
        limit: int = 50,
    ) -> list[TraceRecord]:
        """Traces, newest first; of one tenant (all for None), kind and outcome if asked."""
        query = select(TraceRow)
        if tenant_id is not None:
            query = query.where(TraceRow.tenant_id == tenant_id)
        if kind is not None:
            query = query.where(TraceRow.kind == kind)
        if outcome is not None:
            query = query.where(TraceRow.outcome == outcome)
        query = query.order_by(TraceRow.id.desc()).limit(limit)
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query)]
