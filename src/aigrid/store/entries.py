"""Sentences given to the super entry and the journal of their sagas.

Blocking calls (run them off the event loop). Every call a saga makes to a service is journaled
before it is made and again when it answers, so a restarted server knows which calls may have
happened and repeats them under the same idempotency key.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.schema import EntryJournalRow, EntryRow

EntryState = Literal[
    "planning",  # the model is writing the plan, read-only steps run
    "awaiting_confirmation",  # the user has the summary; nothing has changed in the world
    "running",  # confirmed: the saga moves forward
    "compensating",  # a step failed: what was done is undone in reverse
    "done",
    "failed",  # nothing was done (or all of it was undone); the answer says why
    "declined",  # the user said no
]
ENTRY_STATES: tuple[str, ...] = get_args(EntryState)
FINAL_ENTRY_STATES = frozenset({"done", "failed", "declined"})
# States a restarted server must pick up: a confirmed saga is finished or compensated.
OPEN_SAGA_STATES = ("running", "compensating")
JournalKind = Literal["intent", "result", "refused", "note"]


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """An entry as stored."""

    id: str
    tenant_id: int
    user: str
    input: str
    state: str
    plan: dict[str, Any] | None
    summary: dict[str, Any] | None
    answer: str | None
    created_at_us: int
    updated_at_us: int

    @property
    def finished(self) -> bool:
        """Whether the entry has ended and can change no more."""
        return self.state in FINAL_ENTRY_STATES


@dataclass(frozen=True, slots=True)
class JournalStep:
    """One journaled step of a saga."""

    seq: int
    kind: str
    payload: dict[str, Any]
    created_at_us: int


def _json(value: str | None) -> dict[str, Any] | None:
    return None if value is None else dict(orjson.loads(value))


def _record(row: EntryRow) -> EntryRecord:
    return EntryRecord(
        row.id,
        row.tenant_id,
        row.user,
        row.input,
        row.state,
        _json(row.plan),
        _json(row.summary),
        row.answer,
        row.created_at_us,
        row.updated_at_us,
    )


class EntryStore:
    """Creates entries, moves them between states and journals their sagas."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, tenant_id: int, user: str, text: str) -> EntryRecord:
        """A new entry in ``planning``."""
        now = now_us()
        row = EntryRow(
            id=f"ent-{secrets.token_hex(8)}",
            tenant_id=tenant_id,
            user=user,
            input=text,
            state="planning",
            created_at_us=now,
            updated_at_us=now,
        )
        with Session(self._engine) as session, session.begin():
            session.add(row)
            session.flush()
            return _record(row)

    def get(self, entry_id: str, tenant_id: int | None = None) -> EntryRecord:
        """The entry, if the tenant owns it (any tenant's for None); 404 otherwise."""
        with Session(self._engine) as session:
            row = session.get(EntryRow, entry_id)
            if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
                raise AccountError(404, f"No entry '{entry_id}'.")
            return _record(row)

    def find(self, tenant_id: int | None, state: str | None = None, limit: int = 50) -> list[EntryRecord]:
        """A tenant's entries (everyone's for None), newest first."""
        query = select(EntryRow).order_by(EntryRow.created_at_us.desc(), EntryRow.id).limit(limit)
        if tenant_id is not None:
            query = query.where(EntryRow.tenant_id == tenant_id)
        if state is not None:
            query = query.where(EntryRow.state == state)
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query)]

    def in_states(self, states: Collection[str]) -> list[EntryRecord]:
        """Every entry in one of ``states``, oldest first."""
        query = select(EntryRow).where(EntryRow.state.in_(states)).order_by(EntryRow.created_at_us)
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query)]

    def move(
        self,
        entry_id: str,
        from_states: Collection[str],
        to_state: EntryState,
        *,
        plan: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
        answer: str | None = None,
    ) -> EntryRecord | None:
        """Move the entry if it is in one of ``from_states`` (and set what is given); None if not."""
        values: dict[str, Any] = {"state": to_state, "updated_at_us": now_us()}
        if plan is not None:
            values["plan"] = orjson.dumps(plan).decode()
        if summary is not None:
            values["summary"] = orjson.dumps(summary).decode()
        if answer is not None:
            values["answer"] = answer
        with Session(self._engine) as session, session.begin():
            moved = session.scalars(
                update(EntryRow)
                .where(EntryRow.id == entry_id, EntryRow.state.in_(from_states))
                .values(**values)
                .returning(EntryRow)
            ).first()
            return None if moved is None else _record(moved)

    def append(self, entry_id: str, kind: JournalKind, payload: dict[str, Any]) -> int:
        """Journal a step of the entry's saga; its sequence number."""
        with Session(self._engine) as session, session.begin():
            last = session.scalar(
                select(func.max(EntryJournalRow.seq)).where(EntryJournalRow.entry_id == entry_id)
            )
            seq = (last or 0) + 1
            session.add(
                EntryJournalRow(
                    entry_id=entry_id,
                    seq=seq,
                    kind=kind,
                    payload=orjson.dumps(payload).decode(),
                    created_at_us=now_us(),
                )
            )
            return seq

    def journal(self, entry_id: str) -> list[JournalStep]:
        """The entry's saga journal in order."""
        query = (
            select(EntryJournalRow).where(EntryJournalRow.entry_id == entry_id).order_by(EntryJournalRow.seq)
        )
        with Session(self._engine) as session:
            return [
                JournalStep(r.seq, r.kind, orjson.loads(r.payload), r.created_at_us)
                for r in session.scalars(query)
            ]
