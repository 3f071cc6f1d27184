"""Processes and their step journal: every step is committed before the next begins.

Blocking calls (run them off the event loop). Workers keep nothing that is not here, so a step can
be taken by any worker, on this machine or another, and a restarted server goes on from the
journal.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import orjson
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.agents import StoredSpec
from aigrid.store.cluster import Owner
from aigrid.store.db import DriverConnection, DriverStatement, StoreCalls
from aigrid.store.schema import ProcessRow, ToolAudit

ProcessState = Literal[
    "ready",
    "running",
    "waiting_tool",
    "waiting_approval",
    "sleeping",
    "suspended",
    "done",
    "failed",
    "killed",
]
STATES: tuple[str, ...] = get_args(ProcessState)
FINAL_STATES = frozenset({"done", "failed", "killed"})
StepKind = Literal[
    "model_request", "model_response", "tool_call", "tool_result", "approval", "signal", "note"
]
STEP_KINDS: tuple[str, ...] = get_args(StepKind)


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A process as stored."""

    pid: str
    tenant_id: int
    agent: str
    agent_version: int
    parent_pid: str | None
    input: str
    state: str
    reason: str | None
    priority: str
    steps: int
    prompt_tokens: int
    completion_tokens: int
    cost_micro: int
    result: str | None
    created_at_us: int
    updated_at_us: int
    origin: str = "api"  # what started it: api, trigger, webhook, message, spawn or chat
    owner_node_id: int | None = None  # the node that steps it, and the epoch it did so under
    owner_epoch: int | None = None

    @property
    def finished(self) -> bool:
        """Whether the process has ended (done, failed or killed) and can change no more."""
        return self.state in FINAL_STATES


class NotOwner(AccountError):
    """A step's write refused: the process is not owned by the writer's node and epoch, or that
    epoch's lease has ended (another server may have taken the process up)."""

    def __init__(self, pid: str, owner: Owner) -> None:
        super().__init__(
            409, f"Process {pid} is not owned by node {owner.node_id} epoch {owner.epoch} with a live lease."
        )
        self.owner = owner


@dataclass(frozen=True, slots=True)
class Step:
    """One journaled step of a process."""

    pid: str
    seq: int
    kind: str
    payload: dict[str, Any]
    created_at_us: int


@dataclass(frozen=True, slots=True)
class StepUsage:
    """Tokens and cost a step used, added to the process's counters with the step."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micro: int = 0


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A tool call for the audit log: the tool, a SHA-256 of its arguments, and how it went."""

    tool: str
    arguments_sha256: str
    outcome: Literal["ok", "error", "refused"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A tool call as the audit log kept it."""

    at_us: int
    tenant_id: int
    pid: str
    agent: str
    tool: str
    arguments_sha256: str
    outcome: str


# Every step of every process runs these, so they go to the driver (DriverStatement), compiled once.
_COLUMNS = (
    "pid, tenant_id, agent, agent_version, parent_pid, input, state, reason, priority, steps, "
    "prompt_tokens, completion_tokens, cost_micro, result, created_at_us, updated_at_us, origin, "
    "owner_node_id, owner_epoch"
)
_FINAL_SQL = ", ".join(f"'{state}'" for state in sorted(FINAL_STATES))
_LIVE = "'running', 'waiting_tool'"
_STEP_SET = (
    "UPDATE processes SET steps = steps + :entries, prompt_tokens = prompt_tokens + :prompt, "
    "completion_tokens = completion_tokens + :completion, cost_micro = cost_micro + :cost, "
    "updated_at_us = :at{moves} WHERE pid = :pid AND state NOT IN ({final}){fence} "
    f"RETURNING {_COLUMNS}"
)
# A signal's state (suspended, killed) stands over the step's: SET sees the row as it was.
_MOVES = (
    f", state = CASE WHEN state IN ({_LIVE}) THEN :state ELSE state END"
    f", result = CASE WHEN state IN ({_LIVE}) THEN COALESCE(:result, result) ELSE result END"
)
# The owner's check, in the statement that writes: the row must name the writer's node and epoch,
# and that epoch's lease must still run on the database's clock. An epoch whose lease ended never
# runs again (a renewal needs a running lease), so a zombie's write is refused for good. The
# processes row stays locked to the commit, so a takeover (which locks it too) comes before or after.
_FENCE = (
    " AND owner_node_id = :node AND owner_epoch = :epoch AND EXISTS (SELECT 1 FROM cluster_nodes n "
    "WHERE n.id = :node AND n.epoch = :epoch AND n.lease_until_us > {now})"
)
# The database's clock in microseconds; SQLite (one machine) takes the Python clock as :now.
PG_NOW = "CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000) AS BIGINT)"


def now_sql(engine: Engine) -> str:
    """The database's "now" in microseconds, as SQL text (``:now`` on SQLite: pass ``now_us()``)."""
    return PG_NOW if engine.dialect.name == "postgresql" else ":now"


def _step_sql(moves: bool, fence: str) -> Any:
    return text(_step_set(moves, fence))


def _step_set(moves: bool, fence: str) -> str:
    return _STEP_SET.format(moves=_MOVES if moves else "", final=_FINAL_SQL, fence=fence)


def _pg_step_sql(moves: bool, fence: str) -> Any:
    return text(_PG_STEP.format(step=_step_set(moves, fence)))


# On PostgreSQL a step is one statement, in autocommit: the process's UPDATE, its journal entries
# (the arrays' elements, numbered) and its audit record as data-modifying CTEs, so a step is one
# round trip and one commit instead of five; a unique violation undoes all of it.
_PG_STEP = (
    "WITH moved AS ({step}), "
    "journal AS (INSERT INTO process_journal (pid, seq, kind, payload, created_at_us) "
    "SELECT moved.pid, moved.steps - :entries + e.n, e.kind, e.payload, :at FROM moved, "
    "unnest(CAST(:kinds AS VARCHAR[]), CAST(:payloads AS TEXT[])) WITH ORDINALITY AS e(kind, payload, n)), "
    "audit AS (INSERT INTO tool_audit (at_us, tenant_id, pid, agent, tool, arguments_sha256, outcome) "
    "SELECT :at, moved.tenant_id, moved.pid, moved.agent, :tool, :digest, :outcome FROM moved "
    "WHERE CAST(:audited AS BOOLEAN)) "
    f"SELECT {_COLUMNS} FROM moved"
)
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
    f"RETURNING {_COLUMNS}"
)
_PROCESS = text(f"SELECT {_COLUMNS} FROM processes WHERE pid = :pid")
_STEPS = text(
    "SELECT pid, seq, kind, payload, created_at_us FROM process_journal "
    "WHERE pid = :pid AND seq > :after ORDER BY seq"
)
_TABLE_COLUMNS = [ProcessRow.__table__.c[name] for name in _COLUMNS.split(", ")]


def _record(row: Any) -> ProcessRecord:
    """A process from a row of ``_COLUMNS``, in their order."""
    return ProcessRecord(*row)


def _not_stepped(pid: str, current: str, owner: Owner | None) -> Exception:
    """Why a step's write changed no row: the process is another owner's, or it has ended."""
    if owner is not None and current not in FINAL_STATES:
        return NotOwner(pid, owner)
    return AccountError(409, f"Process {pid} has ended ({current}); it takes no more steps.")


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
        # [moves][checked]: the whole step in one statement, on PostgreSQL only.
        self.pg_step = (
            [[DriverStatement(engine, _pg_step_sql(m, f)) for f in ("", fence)] for m in (False, True)]
            if engine.dialect.name == "postgresql"
            else None
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
        # The driver's own IntegrityError: the hot statements run on its cursor, not SQLAlchemy's.
        self._integrity: type[Exception] = engine.dialect.loaded_dbapi.IntegrityError
        self.calls = StoreCalls(engine)

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
            return [_record(r) for r in conn.execute(query.limit(limit))]

    def _read(self, cursor: Any, pid: str, tenant_id: int | None) -> ProcessRecord:
        """A process; 404 if there is none, or if it belongs to another tenant than ``tenant_id``."""
        self._sql.process.run(cursor, {"pid": pid})
        row = cursor.fetchone()
        if row is None or (tenant_id is not None and row[1] != tenant_id):
            raise AccountError(404, f"No process {pid}.")
        return _record(row)

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
        entries = [(kind, payload), *after]
        if any(k not in STEP_KINDS for k, _ in entries):
            raise ValueError(f"unknown step kind in {[k for k, _ in entries]!r}")
        used = usage or StepUsage()
        at = now_us()
        values = {
            "pid": pid,
            "state": state,
            "result": result,
            "prompt": used.prompt_tokens,
            "completion": used.completion_tokens,
            "cost": used.cost_micro,
            "at": at,
            "entries": len(entries),
            **_fence_values(owner),
        }
        checked = owner is not None
        if self._sql.pg_step is not None:
            return self._pg_append(values, entries, audit, moves=state is not None, owner=owner)
        try:
            with self._driver.cursor(write=True) as cursor:
                (self._sql.step if state is None else self._sql.step_moves)[checked].run(cursor, values)
                row = cursor.fetchone()
                if row is None:  # no such process (404), it has ended, or it is not the owner's
                    raise _not_stepped(pid, self._read(cursor, pid, None).state, owner)
                record = _record(row)
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
                if audit is not None:
                    self._sql.audit.run(
                        cursor,
                        {
                            "at": at,
                            "tenant": record.tenant_id,
                            "pid": pid,
                            "agent": record.agent,
                            "tool": audit.tool[:128],
                            "digest": audit.arguments_sha256,
                            "outcome": audit.outcome,
                        },
                    )
                return record
        except self._integrity as exc:  # another worker journaled this process's step first
            raise AccountError(409, f"Process {pid} was stepped by two workers at once.") from exc

    def _pg_append(
        self,
        values: dict[str, Any],
        entries: list[tuple[StepKind, dict[str, Any]]],
        audit: AuditEntry | None,
        *,
        moves: bool,
        owner: Owner | None,
    ) -> ProcessRecord:
        """``append`` on PostgreSQL: the whole step in one statement (``_PG_STEP``)."""
        assert self._sql.pg_step is not None
        pid = str(values["pid"])
        values = {
            **values,
            "kinds": [k for k, _ in entries],
            "payloads": [orjson.dumps(p).decode() for _, p in entries],
            "audited": audit is not None,
            "tool": None if audit is None else audit.tool[:128],
            "digest": None if audit is None else audit.arguments_sha256,
            "outcome": None if audit is None else audit.outcome,
        }
        try:
            with self._driver.cursor() as cursor:  # one statement: its own transaction
                self._sql.pg_step[moves][owner is not None].run(cursor, values)
                row = cursor.fetchone()
                if row is not None:
                    return _record(row)
                current = self._read(cursor, pid, None).state
        except self._integrity as exc:  # another worker journaled this process's step first
            raise AccountError(409, f"Process {pid} was stepped by two workers at once.") from exc
        raise _not_stepped(pid, current, owner)

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
                return _record(row)
            current = self._read(cursor, pid, None).state  # 404 if there is no such process
        if owner is not None and current not in FINAL_STATES and current in (expect or STATES):
            raise NotOwner(pid, owner)
        if current in FINAL_STATES:
            raise AccountError(409, f"Process {pid} has ended ({current}).")
        raise AccountError(409, f"Process {pid} is {current}, not {' or '.join(sorted(expect or ()))}.")
