"""Processes and their step journal: every step is committed before the next begins.

Blocking calls (run them off the event loop). Workers keep nothing that is not here, so a step can
be taken by any worker, on this machine or another, and a restarted server goes on from the
journal.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson
from sqlalchemy import Connection, Engine, bindparam, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aigrid.grid.limits import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.agents import StoredSpec
from aigrid.store.db import StoreCalls
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

    @property
    def finished(self) -> bool:
        """Whether the process has ended (done, failed or killed) and can change no more."""
        return self.state in FINAL_STATES


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


# Every step of every process runs these, so they are plain SQL compiled once: building ORM or
# Core statements each time cost twenty times what SQLite spends on them.
_COLUMNS = (
    "pid, tenant_id, agent, agent_version, parent_pid, input, state, reason, priority, steps, "
    "prompt_tokens, completion_tokens, cost_micro, result, created_at_us, updated_at_us"
)
_STEP_SET = (
    "UPDATE processes SET steps = steps + :entries, prompt_tokens = prompt_tokens + :prompt, "
    "completion_tokens = completion_tokens + :completion, cost_micro = cost_micro + :cost, "
    "updated_at_us = :at{moves} WHERE pid = :pid AND state NOT IN ({final}) "
    f"RETURNING {_COLUMNS}"
)
_FINAL_SQL = ", ".join(f"'{state}'" for state in sorted(FINAL_STATES))
_STEP = text(_STEP_SET.format(moves="", final=_FINAL_SQL))
_STEP_MOVES = text(
    _STEP_SET.format(
        moves=", state = CASE WHEN state IN ('running', 'waiting_tool') THEN :state ELSE state END",
        final=_FINAL_SQL,
    )
)
_JOURNAL = text(
    "INSERT INTO process_journal (pid, seq, kind, payload, created_at_us) "
    "VALUES (:pid, :seq, :kind, :payload, :at)"
)
_AUDIT = text(
    "INSERT INTO tool_audit (at_us, tenant_id, pid, agent, tool, arguments_sha256, outcome) "
    "VALUES (:at, :tenant, :pid, :agent, :tool, :digest, :outcome)"
)
_MOVE = text(
    "UPDATE processes SET state = :state, reason = :reason, result = COALESCE(:result, result), "
    f"updated_at_us = :at WHERE pid = :pid AND state IN :allowed RETURNING {_COLUMNS}"
).bindparams(bindparam("allowed", expanding=True))
_PROCESS = text(f"SELECT {_COLUMNS} FROM processes WHERE pid = :pid")
_STEPS = text(
    "SELECT pid, seq, kind, payload, created_at_us FROM process_journal "
    "WHERE pid = :pid AND seq > :after ORDER BY seq"
)


def _record(row: Any) -> ProcessRecord:
    # An ORM row or a Core row: both name their columns.
    return ProcessRecord(
        row.pid,
        row.tenant_id,
        row.agent,
        row.agent_version,
        row.parent_pid,
        row.input,
        row.state,
        row.reason,
        row.priority,
        row.steps,
        row.prompt_tokens,
        row.completion_tokens,
        row.cost_micro,
        row.result,
        row.created_at_us,
        row.updated_at_us,
    )


def _read(conn: Connection, pid: str, tenant_id: int | None) -> ProcessRecord:
    """A process; 404 if there is none, or if it belongs to another tenant than ``tenant_id``."""
    row = conn.execute(_PROCESS, {"pid": pid}).one_or_none()
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise AccountError(404, f"No process {pid}.")
    return _record(row)


def _step(row: Any) -> Step:
    return Step(row.pid, row.seq, row.kind, orjson.loads(row.payload), row.created_at_us)


class ProcessStore:
    """Creates processes, journals their steps and moves them between states."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.calls = StoreCalls(engine)

    def create(
        self,
        tenant_id: int,
        agent: StoredSpec,
        input_text: str,
        parent_pid: str | None = None,
        spawn_key: str | None = None,
    ) -> ProcessRecord:
        """A new process of ``agent`` on ``input_text``, ready to run.

        With a ``spawn_key`` (the idempotency key of the tool call that asked for it), a process
        already started under that key is returned instead of a second one.
        """
        now = now_us()
        row = ProcessRow(
            pid="p-" + secrets.token_hex(8),
            tenant_id=tenant_id,
            agent=agent.spec.name,
            agent_version=agent.version,
            parent_pid=parent_pid,
            spawn_key=spawn_key,
            input=input_text,
            state="ready",
            priority=agent.spec.priority,
            steps=0,
            prompt_tokens=0,
            completion_tokens=0,
            cost_micro=0,
            created_at_us=now,
            updated_at_us=now,
        )
        try:
            with Session(self._engine) as session, session.begin():
                session.add(row)
                session.flush()
                return _record(row)
        except IntegrityError:
            # spawn_key is unique: a call made again finds the process its first run started.
            if spawn_key is not None and (existing := self.spawned(spawn_key)) is not None:
                return existing
            raise

    def spawned(self, spawn_key: str) -> ProcessRecord | None:
        """The process started by the tool call with this idempotency key, if any."""
        with Session(self._engine) as session:
            row = session.scalar(select(ProcessRow).where(ProcessRow.spawn_key == spawn_key))
            return None if row is None else _record(row)

    def children(self, pid: str) -> list[ProcessRecord]:
        """The processes ``pid`` spawned, oldest first."""
        query = select(ProcessRow).where(ProcessRow.parent_pid == pid).order_by(ProcessRow.created_at_us)
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query)]

    def get(self, pid: str, tenant_id: int | None = None) -> ProcessRecord:
        """A process; 404 if there is none, or if it belongs to another tenant than ``tenant_id``."""
        with self._engine.connect() as conn:
            return _read(conn, pid, tenant_id)

    def find(
        self, tenant_id: int | None = None, states: Collection[str] | None = None, limit: int = 100
    ) -> list[ProcessRecord]:
        """Processes, newest first; of one tenant and in some states if asked."""
        query = select(ProcessRow)
        if tenant_id is not None:
            query = query.where(ProcessRow.tenant_id == tenant_id)
        if states is not None:
            query = query.where(ProcessRow.state.in_(list(states)))
        query = query.order_by(ProcessRow.created_at_us.desc(), ProcessRow.pid).limit(limit)
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query)]

    def unfinished(self) -> list[ProcessRecord]:
        """Every process that has not ended, oldest first: what a restarted server resumes."""
        query = select(ProcessRow).where(ProcessRow.state.not_in(list(FINAL_STATES)))
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query.order_by(ProcessRow.created_at_us))]

    def append(
        self,
        pid: str,
        kind: StepKind,
        payload: dict[str, Any],
        usage: StepUsage | None = None,
        audit: AuditEntry | None = None,
        *,
        state: Literal["running", "waiting_tool"] | None = None,
        after: tuple[StepKind, dict[str, Any]] | None = None,
    ) -> ProcessRecord:
        """Journal the next step of a live process, with the tokens and cost it used and, for a
        tool call's result, its audit record, in one commit; the process after it, whose
        ``steps`` is the new step's ``seq``.

        ``state`` moves a process between running and waiting_tool in the same commit; a process
        a signal moved elsewhere meanwhile stays where the signal put it. ``after`` journals a
        second step right after this one, in the same commit (a model's request and its answer).
        """
        entries = [(kind, payload)] if after is None else [(kind, payload), after]
        if any(k not in STEP_KINDS for k, _ in entries):
            raise ValueError(f"unknown step kind in {[k for k, _ in entries]!r}")
        used = usage or StepUsage()
        at = now_us()
        try:
            with self._engine.begin() as conn:
                row = conn.execute(
                    _STEP_MOVES if state is not None else _STEP,
                    {
                        "pid": pid,
                        "state": state,
                        "prompt": used.prompt_tokens,
                        "completion": used.completion_tokens,
                        "cost": used.cost_micro,
                        "at": at,
                        "entries": len(entries),
                    },
                ).one_or_none()
                if row is None:  # no such process (404), or it has ended
                    current = _read(conn, pid, None).state
                    raise AccountError(409, f"Process {pid} has ended ({current}); it takes no more steps.")
                # steps counts journal entries, so it is the newest seq; (pid, seq) is unique, so
                # two workers stepping one process at once cannot both write.
                first = row.steps - len(entries) + 1
                conn.execute(
                    _JOURNAL,
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
                    conn.execute(
                        _AUDIT,
                        {
                            "at": at,
                            "tenant": row.tenant_id,
                            "pid": pid,
                            "agent": row.agent,
                            "tool": audit.tool[:128],
                            "digest": audit.arguments_sha256,
                            "outcome": audit.outcome,
                        },
                    )
                return _record(row)
        except IntegrityError as exc:  # another worker journaled this process's step first
            raise AccountError(409, f"Process {pid} was stepped by two workers at once.") from exc

    def snapshot(self, pid: str) -> tuple[ProcessRecord, list[Step]]:
        """A process and its whole journal, read together: what a worker needs for a step."""
        with self._engine.connect() as conn:
            process = _read(conn, pid, None)
            return process, [_step(r) for r in conn.execute(_STEPS, {"pid": pid, "after": 0})]

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
        with self._engine.connect() as conn:
            return [_step(r) for r in conn.execute(_STEPS, {"pid": pid, "after": after})]

    def set_state(
        self,
        pid: str,
        state: ProcessState,
        *,
        reason: str | None = None,
        result: str | None = None,
        expect: Collection[str] | None = None,
    ) -> ProcessRecord:
        """Move a process to ``state``; 409 if it has ended, or is not in one of the ``expect`` states."""
        if state not in STATES:
            raise ValueError(f"unknown process state {state!r}")
        allowed = [s for s in (STATES if expect is None else expect) if s not in FINAL_STATES]
        values = {
            "pid": pid,
            "state": state,
            "reason": reason[:512] if reason else None,
            "result": result,
            "at": now_us(),
            "allowed": allowed or [""],
        }
        with self._engine.begin() as conn:
            row = conn.execute(_MOVE, values).one_or_none()
            if row is not None:
                return _record(row)
            current = _read(conn, pid, None).state  # 404 if there is no such process
        if current in FINAL_STATES:
            raise AccountError(409, f"Process {pid} has ended ({current}).")
        raise AccountError(409, f"Process {pid} is {current}, not {' or '.join(sorted(expect or ()))}.")
