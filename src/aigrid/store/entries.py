"""Sentences given to the super entry and the journal of their sagas.

Blocking calls (run them off the event loop). Every call a saga makes to a service is journaled
before it is made and again when it answers, so a restarted server knows which calls may have
happened and repeats them under the same idempotency key.

While an entry plans or runs its saga it has an owner (a node and its epoch, see
``aigrid.store.cluster``). Writes given an ``owner`` check it in their own transaction: a server
whose epoch was fenced, or whose entry another server has claimed, writes nothing. ``claim``
takes the open entries whose owner's lease has ended, for exactly one recovering server.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson
from sqlalchemy import ColumnElement, Engine, and_, func, not_, or_, select, update
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.cluster import Fenced, Owner, claim_rows, fence_check, owner_is_live
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
# States in which an entry is being worked on by its owner (a server that stops leaves them open).
OWNED_STATES = ("planning", *OPEN_SAGA_STATES)
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
    owner: Owner | None = None

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
        None if row.owner_node_id is None else Owner(row.owner_node_id, row.owner_epoch or 0),
    )


def _owned_by(owner: Owner) -> ColumnElement[bool]:
    return and_(EntryRow.owner_node_id == owner.node_id, EntryRow.owner_epoch == owner.epoch)


class EntryStore:
    """Creates entries, moves them between states and journals their sagas."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, tenant_id: int, user: str, text: str, owner: Owner | None = None) -> EntryRecord:
        """A new entry in ``planning``, owned by ``owner`` (refused with Fenced if it is not live)."""
        now = now_us()
        row = EntryRow(
            id=f"ent-{secrets.token_hex(8)}",
            tenant_id=tenant_id,
            user=user,
            input=text,
            state="planning",
            created_at_us=now,
            updated_at_us=now,
            owner_node_id=None if owner is None else owner.node_id,
            owner_epoch=None if owner is None else owner.epoch,
        )
        with Session(self._engine) as session, session.begin():
            if owner is not None:
                fence_check(session.connection(), owner)
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
        owner: Owner | None = None,
        take: Owner | None = None,
    ) -> EntryRecord | None:
        """Move the entry if it is in one of ``from_states`` (and set what is given); None if not.

        With ``owner``, only if the entry is still that owner's and its lease still runs (a fenced
        server's write is refused); with ``take``, a live ``take`` becomes the owner (confirming).
        """
        values: dict[str, Any] = {"state": to_state, "updated_at_us": now_us()}
        where = [EntryRow.id == entry_id, EntryRow.state.in_(from_states)]
        for who in (owner, take):
            if who is not None:
                where.append(owner_is_live(self._engine, who.node_id, who.epoch))
        if owner is not None:
            where.append(_owned_by(owner))
        if take is not None:
            values |= {"owner_node_id": take.node_id, "owner_epoch": take.epoch}
        if plan is not None:
            values["plan"] = orjson.dumps(plan).decode()
        if summary is not None:
            values["summary"] = orjson.dumps(summary).decode()
        if answer is not None:
            values["answer"] = answer
        with Session(self._engine) as session, session.begin():
            moved = session.scalars(
                update(EntryRow).where(*where).values(**values).returning(EntryRow)
            ).first()
            return None if moved is None else _record(moved)

    def claim(self, owner: Owner, limit: int = 100) -> list[EntryRecord]:
        """Take for ``owner`` the entries being planned or carried out whose owner is not live.

        Entries of nodes whose lease ended, of this node's earlier epochs, and those with no owner
        (from before clusters) are claimed; a live peer's are left alone. PostgreSQL skips rows
        another claimer has locked; the UPDATE's own condition is the compare-and-set (all SQLite
        has), so two claimers never both get an entry. Raises Fenced if ``owner`` is not live.
        """
        orphaned = and_(
            EntryRow.state.in_(OWNED_STATES),
            or_(
                EntryRow.owner_node_id.is_(None),
                not_(owner_is_live(self._engine, EntryRow.owner_node_id, EntryRow.owner_epoch)),
            ),
        )
        moved = {"owner_node_id": owner.node_id, "owner_epoch": owner.epoch}
        taken = claim_rows(
            self._engine, owner, EntryRow.id, orphaned, EntryRow.created_at_us, limit, moved, _record
        )
        return sorted(taken, key=lambda e: e.created_at_us)

    def append(
        self, entry_id: str, kind: JournalKind, payload: dict[str, Any], owner: Owner | None = None
    ) -> int:
        """Journal a step of the entry's saga; its sequence number.

        With ``owner``, the entry's row is locked and must still be that live owner's (Fenced if
        not): a claimer waits for this write, so it replays a journal nothing can add to after.
        """
        with Session(self._engine) as session, session.begin():
            if owner is not None:
                held = session.scalar(
                    select(EntryRow.id).where(EntryRow.id == entry_id, _owned_by(owner)).with_for_update()
                )
                if held is None:
                    raise Fenced(owner, f"entry {entry_id} is no longer its own")
                fence_check(session.connection(), owner)
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
