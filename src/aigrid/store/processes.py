"""Processes and their step journal: every step is committed before the next begins.

Blocking calls (run them off the event loop). Workers keep nothing that is not here, so a step can
be taken by any worker, on this machine or another, and a restarted server goes on from the
journal.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Collection, Sequence
from dataclasses import asdict
from typing import Any, Literal

import orjson
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.agents import StoredSpec
from aigrid.store.batches import Batcher
from aigrid.store.cluster import Owner
from aigrid.store.db import DriverConnection, DriverStatement, StoreCalls, loop_connections
from aigrid.store.process_batches import (
    PG_BATCH,
    BatchItem,
    Read,
    StepWrite,
    batch_outcomes,
    batch_values,
    not_stepped,
    step_write,
)
from aigrid.store.process_records import (
    COLUMNS,
    FINAL_SQL,
    FINAL_STATES,
    LIVE_SQL,
    OWNED_SQL,
    PG_NOW,
    STATES,
    AuditEntry,
    AuditRecord,
    NotOwner,
    ProcessRecord,
    ProcessState,
    Step,
    StepKind,
    StepUsage,
    record_of,
)
from aigrid.store.schema import ProcessRow, ToolAudit

__all__ = [
    "FINAL_STATES",
    "STATES",
    "AuditEntry",
    "AuditRecord",
    "NotOwner",
    "ProcessRecord",
    "ProcessState",
    "ProcessStore",
    "Step",
    "StepKind",
    "StepUsage",
    "now_sql",
]

# Every step of every process runs these, so they go to the driver (DriverStatement), compiled once.
_STEP_SET = (
    "UPDATE processes SET steps = steps + :entries, prompt_tokens = prompt_tokens + :prompt, "
    "completion_tokens = completion_tokens + :completion, cost_micro = cost_micro + :cost, "
    "updated_at_us = :at{moves} WHERE pid = :pid AND state NOT IN ({final}){fence} "
    f"RETURNING {COLUMNS}"
)
# A signal's state (suspended, killed) stands over the step's: SET sees the row as it was.
_MOVES = (
    f", state = CASE WHEN state IN ({LIVE_SQL}) THEN :state ELSE state END"
    f", result = CASE WHEN state IN ({LIVE_SQL}) THEN COALESCE(:result, result) ELSE result END"
)
_FENCE = " AND " + OWNED_SQL.format(node=":node", epoch=":epoch", now="{now}")


def now_sql(engine: Engine) -> str:
    """The database's "now" in microseconds, as SQL text (``:now`` on SQLite: pass ``now_us()``)."""
    return PG_NOW if engine.dialect.name == "postgresql" else ":now"


def _step_sql(moves: bool, fence: str) -> Any:
    return text(_step_set(moves, fence))


def _step_set(moves: bool, fence: str) -> str:
    return _STEP_SET.format(moves=_MOVES if moves else "", final=FINAL_SQL, fence=fence)


_JOURNAL = text(
    "INSERT INTO process_journal (pid, seq, kind, payload, created_at_us) "
    "VALUES (:pid, :seq, :kind, :payload, :at)"
)
_AUDIT = text(
    "INSERT INTO tool_audit (at_us, tenant_id, pid, agent, tool, arguments_sha256, outcome) "
    "VALUES (:at, :tenant, :pid, :agent, :tool, :digest, :outcome)"
)
# The states a move may start from, one parameter each (repeated to fill), so the statement is
# compiled once rather than per list.
_FROM = tuple(f"from{i}" for i in range(len(STATES)))
_MOVE = (
    "UPDATE processes SET state = :state, reason = :reason, result = COALESCE(:result, result), "
    f"updated_at_us = :at WHERE pid = :pid AND state IN ({', '.join(':' + p for p in _FROM)}){{fence}} "
    f"RETURNING {COLUMNS}"
)
_PROCESS = text(f"SELECT {COLUMNS} FROM processes WHERE pid = :pid")
_STEPS = text(
    "SELECT pid, seq, kind, payload, created_at_us FROM process_journal "
    "WHERE pid = :pid AND seq > :after ORDER BY seq"
)
_TABLE_COLUMNS = [ProcessRow.__table__.c[name] for name in COLUMNS.split(", ")]


def _fence_values(owner: Owner | None) -> dict[str, Any]:
    """The parameters of the owner's check (the Python clock stands for SQLite's)."""
    if owner is None:
        return {}
    return {"node": owner.node_id, "epoch": owner.epoch, "now": now_us()}


def _step(row: Any) -> Step:
    return Step(row[0], row[1], row[2], orjson.loads(row[3]), row[4])


class _Statements:
    """The hot statements, compiled for one engine's dialect."""

    def __init__(self, engine: Engine) -> None:
        self.process = DriverStatement(engine, _PROCESS)
        self.steps = DriverStatement(engine, _STEPS)
        fence = _FENCE.format(now=now_sql(engine))
        # [unchecked, checked for an owner]: a server's own steps are checked, a person's signal not.
        self.step = [DriverStatement(engine, _step_sql(False, f)) for f in ("", fence)]
        self.step_moves = [DriverStatement(engine, _step_sql(True, f)) for f in ("", fence)]
        # PostgreSQL's: many processes' steps and reads in one statement.
        self.pg_batch = (
            DriverStatement(engine, text(PG_BATCH)) if engine.dialect.name == "postgresql" else None
        )
        self.journal = DriverStatement(engine, _JOURNAL)
        self.audit = DriverStatement(engine, _AUDIT)
        self.move = [DriverStatement(engine, text(_MOVE.format(fence=f))) for f in ("", fence)]
        self.create = DriverStatement(engine, insert(ProcessRow))


class ProcessStore:
    """Creates processes, journals their steps and moves them between states."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sql = _Statements(engine)
        self._driver = DriverConnection(engine)
        self.calls = StoreCalls(engine)
        # The driver's own errors: the hot statements run on its cursor, not SQLAlchemy's.
        dbapi = engine.dialect.loaded_dbapi
        self._integrity: type[Exception] = dbapi.IntegrityError
        self._server_errors: tuple[type[Exception], ...] = (dbapi.IntegrityError, dbapi.OperationalError)
        # On PostgreSQL, the steps and reads that arrive together go together (group commit),
        # sent by the event loop itself where the driver can.
        self._batches = Batcher(self._pg_batch, key=lambda item: item.pid)
        self._loop_connections = loop_connections(engine)

    def create(
        self,
        tenant_id: int,
        agent: StoredSpec,
        input_text: str,
        parent_pid: str | None = None,
        spawn_key: str | None = None,
        origin: str = "api",
        owner: Owner | None = None,
    ) -> ProcessRecord:
        """A new process of ``agent`` on ``input_text``, ready to run, owned by ``owner`` if given.

        With a ``spawn_key`` (the idempotency key of the tool call that asked for it), a process
        already started under that key is returned instead of a second one.
        """
        now = now_us()
        record = ProcessRecord(
            pid="p-" + secrets.token_hex(8),
            tenant_id=tenant_id,
            agent=agent.spec.name,
            agent_version=agent.version,
            parent_pid=parent_pid,
            input=input_text,
            state="ready",
            reason=None,
            priority=agent.spec.priority,
            steps=0,
            prompt_tokens=0,
            completion_tokens=0,
            cost_micro=0,
            result=None,
            created_at_us=now,
            updated_at_us=now,
            origin=origin,
            owner_node_id=None if owner is None else owner.node_id,
            owner_epoch=None if owner is None else owner.epoch,
        )
        try:
            with self._driver.cursor(write=True) as cursor:
                self._sql.create.run(cursor, {**asdict(record), "spawn_key": spawn_key})
            return record
        except self._integrity:
            # spawn_key is unique: a call made again finds the process its first run started.
            if spawn_key is not None and (existing := self.spawned(spawn_key)) is not None:
                return existing
            raise

    def spawned(self, spawn_key: str) -> ProcessRecord | None:
        """The process started by the tool call with this idempotency key, if any."""
        rows = self._select(ProcessRow.spawn_key == spawn_key)
        return rows[0] if rows else None

    def children(self, pid: str) -> list[ProcessRecord]:
        """The processes ``pid`` spawned, oldest first."""
        return self._select(ProcessRow.parent_pid == pid, order=ProcessRow.created_at_us)

    def get(self, pid: str, tenant_id: int | None = None) -> ProcessRecord:
        """A process; 404 if there is none, or if it belongs to another tenant than ``tenant_id``."""
        with self._driver.cursor() as cursor:
            return self._read(cursor, pid, tenant_id)

    def find(
        self,
        tenant_id: int | None = None,
        states: Collection[str] | None = None,
        limit: int = 100,
        agent: str | None = None,
    ) -> list[ProcessRecord]:
        """Processes, newest first; of one tenant, in some states and of one agent if asked."""
        where = []
        if tenant_id is not None:
            where.append(ProcessRow.tenant_id == tenant_id)
        if states is not None:
            where.append(ProcessRow.state.in_(list(states)))
        if agent is not None:
            where.append(ProcessRow.agent == agent)
        newest = (ProcessRow.created_at_us.desc(), ProcessRow.pid)
        return self._select(*where, order=newest, limit=limit)

    def unfinished(self) -> list[ProcessRecord]:
        """Every process that has not ended, oldest first: what a restarted server resumes."""
        return self._select(ProcessRow.state.not_in(list(FINAL_STATES)), order=ProcessRow.created_at_us)

    def _select(self, *where: Any, order: Any = (), limit: int | None = None) -> list[ProcessRecord]:
        query = (
            select(*_TABLE_COLUMNS).where(*where).order_by(*(order if isinstance(order, tuple) else (order,)))
        )
        with self._engine.connect() as conn:
            return [record_of(r) for r in conn.execute(query.limit(limit))]

    def _read(self, cursor: Any, pid: str, tenant_id: int | None) -> ProcessRecord:
        """A process; 404 if there is none, or if it belongs to another tenant than ``tenant_id``."""
        self._sql.process.run(cursor, {"pid": pid})
        row = cursor.fetchone()
        if row is None or (tenant_id is not None and row[1] != tenant_id):
            raise AccountError(404, f"No process {pid}.")
        return record_of(row)

    def append(
        self,
        pid: str,
        kind: StepKind,
        payload: dict[str, Any],
        usage: StepUsage | None = None,
        audit: AuditEntry | None = None,
        *,
        state: Literal["running", "waiting_tool", "done"] | None = None,
        result: str | None = None,
        after: Sequence[tuple[StepKind, dict[str, Any]]] = (),
        owner: Owner | None = None,
    ) -> ProcessRecord:
        """Journal the next step of a live process, with the tokens and cost it used and, for a
        tool call's result, its audit record, in one commit; the process after it, whose
        ``steps`` is the newest step's ``seq``.

        ``state`` moves a live process (running or waiting_tool) in the same commit, to done with
        its ``result``; a process a signal moved elsewhere meanwhile stays where the signal put
        it. ``after`` journals more steps right after this one, in the same commit (a model's
        request, its answer, and the tool call it asked for). With an ``owner``, the write is
        refused (NotOwner) unless the process is that owner's and its lease runs.
        """
        write = step_write(pid, kind, payload, usage, audit, state, result, after, owner)
        if self._sql.pg_batch is None:
            return self._sqlite_append(write)
        try:
            rows = self._pg_rows(batch_values([write]))
        except self._integrity as exc:
            raise self._stepped_twice(pid) from exc
        (outcome,) = batch_outcomes([write], rows)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def aappend(
        self,
        pid: str,
        kind: StepKind,
        payload: dict[str, Any],
        usage: StepUsage | None = None,
        audit: AuditEntry | None = None,
        *,
        state: Literal["running", "waiting_tool", "done"] | None = None,
        result: str | None = None,
        after: Sequence[tuple[StepKind, dict[str, Any]]] = (),
        owner: Owner | None = None,
    ) -> ProcessRecord:
        """``append`` from the event loop: inline on SQLite; on PostgreSQL in one statement with
        the steps and reads of other processes that arrive meanwhile, each refused or written as
        it would be alone."""
        write = step_write(pid, kind, payload, usage, audit, state, result, after, owner)
        if self._sql.pg_batch is None:
            return self._sqlite_append(write)
        return await self._batches(write)

    async def aget(self, pid: str) -> ProcessRecord:
        """``get`` from the event loop: inline on SQLite; on PostgreSQL in one statement with the
        steps and reads of other processes that arrive meanwhile."""
        if self._sql.pg_batch is None:
            return self.get(pid)
        return await self._batches(Read(pid))

    def _stepped_twice(self, pid: str) -> AccountError:
        # (pid, seq) is unique: the journal had this step already, from another worker.
        return AccountError(409, f"Process {pid} was stepped by two workers at once.")

    def _sqlite_append(self, write: StepWrite) -> ProcessRecord:
        """``append`` on SQLite: the process's UPDATE, then its journal entries and audit record."""
        pid, entries, used, owner, at = write.pid, write.entries, write.usage, write.owner, write.at
        values = {
            "pid": pid,
            "state": write.state,
            "result": write.result,
            "prompt": used.prompt_tokens,
            "completion": used.completion_tokens,
            "cost": used.cost_micro,
            "at": at,
            "entries": len(entries),
            **_fence_values(owner),
        }
        try:
            with self._driver.cursor(write=True) as cursor:
                (self._sql.step if write.state is None else self._sql.step_moves)[owner is not None].run(
                    cursor, values
                )
                row = cursor.fetchone()
                if row is None:  # no such process (404), it has ended, or it is not the owner's
                    raise not_stepped(pid, self._read(cursor, pid, None).state, owner)
                record = record_of(row)
                # steps counts journal entries, so it is the newest seq; (pid, seq) is unique, so
                # two workers stepping one process at once cannot both write.
                first = record.steps - len(entries) + 1
                self._sql.journal.run_many(
                    cursor,
                    [
                        {
                            "pid": pid,
                            "seq": first + i,
                            "kind": k,
                            "payload": orjson.dumps(p).decode(),
                            "at": at,
                        }
                        for i, (k, p) in enumerate(entries)
                    ],
                )
                if write.audit is not None:
                    self._sql.audit.run(
                        cursor,
                        {
                            "at": at,
                            "tenant": record.tenant_id,
                            "pid": pid,
                            "agent": record.agent,
                            "tool": write.audit.tool[:128],
                            "digest": write.audit.arguments_sha256,
                            "outcome": write.audit.outcome,
                        },
                    )
                return record
        except self._integrity as exc:
            raise self._stepped_twice(pid) from exc

    async def _pg_batch(self, items: list[BatchItem]) -> list[ProcessRecord | Exception]:
        """The Batcher's batch on PostgreSQL: every item's process, or why it has none.

        A statement the database refused wrote nothing: each item is then tried alone, so one
        write's error (two workers on one process, a deadlock with a takeover) stays its own. A
        lost connection is every item's error: whether the commit happened is unknown, and a
        second try could journal a step twice.
        """
        assert self._sql.pg_batch is not None
        statement, values = self._sql.pg_batch, batch_values(items)
        try:
            if self._loop_connections is None:
                rows = await asyncio.to_thread(self._pg_rows, values)
            else:
                async with self._loop_connections.cursor() as cursor:
                    await statement.arun(cursor, values)
                    rows = await cursor.fetchall()
        except self._server_errors as exc:
            if getattr(exc, "sqlstate", None) is None:  # no answer from the server
                raise
            if len(items) > 1:
                return [(await self._pg_batch([item]))[0] for item in items]
            if isinstance(exc, self._integrity):
                return [self._stepped_twice(items[0].pid)]
            raise
        return batch_outcomes(items, rows)

    def _pg_rows(self, values: dict[str, str]) -> list[Any]:
        """``PG_BATCH``'s rows, on this thread's connection: one statement, its own transaction."""
        assert self._sql.pg_batch is not None
        with self._driver.cursor() as cursor:
            self._sql.pg_batch.run(cursor, values)
            return list(cursor.fetchall())

    def audit(
        self, tenant_id: int | None = None, pid: str | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        """Tool calls from the audit log, newest first; of one tenant or process if asked."""
        query = select(ToolAudit)
        if tenant_id is not None:
            query = query.where(ToolAudit.tenant_id == tenant_id)
        if pid is not None:
            query = query.where(ToolAudit.pid == pid)
        query = query.order_by(ToolAudit.at_us.desc(), ToolAudit.id.desc()).limit(limit)
        with Session(self._engine) as session:
            return [
                AuditRecord(r.at_us, r.tenant_id, r.pid, r.agent, r.tool, r.arguments_sha256, r.outcome)
                for r in session.scalars(query)
            ]

    def journal(self, pid: str, after: int = 0) -> list[Step]:
        """The steps of a process after step ``after``, in order."""
        with self._driver.cursor() as cursor:
            self._sql.steps.run(cursor, {"pid": pid, "after": after})
            return [_step(r) for r in cursor.fetchall()]

    def set_state(
        self,
        pid: str,
        state: ProcessState,
        *,
        reason: str | None = None,
        result: str | None = None,
        expect: Collection[str] | None = None,
        owner: Owner | None = None,
    ) -> ProcessRecord:
        """Move a process to ``state``; 409 if it has ended, or is not in one of the ``expect`` states.

        With an ``owner`` (a server's own step), NotOwner unless the process is that owner's and its
        lease runs; without one (a person's signal), whoever owns the process notices the new state.
        """
        if state not in STATES:
            raise ValueError(f"unknown process state {state!r}")
        allowed = [s for s in (STATES if expect is None else expect) if s not in FINAL_STATES] or [""]
        values = {
            "pid": pid,
            "state": state,
            "reason": reason[:512] if reason else None,
            "result": result,
            "at": now_us(),
            **{name: allowed[i % len(allowed)] for i, name in enumerate(_FROM)},
            **_fence_values(owner),
        }
        with self._driver.cursor(write=True) as cursor:
            self._sql.move[owner is not None].run(cursor, values)
            row = cursor.fetchone()
            if row is not None:
                return record_of(row)
            current = self._read(cursor, pid, None).state  # 404 if there is no such process
        if owner is not None and current not in FINAL_STATES and current in (expect or STATES):
            raise NotOwner(pid, owner)
        if current in FINAL_STATES:
            raise AccountError(409, f"Process {pid} has ended ({current}).")
        raise AccountError(409, f"Process {pid} is {current}, not {' or '.join(sorted(expect or ()))}.")
