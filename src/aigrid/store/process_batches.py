"""PostgreSQL: the steps and reads of many processes in one statement (a ``Batcher``'s batch).

A batch is one round trip and one commit however many processes it steps: the processes'
UPDATE (each row with its own counts, move and owner's check), their journal entries and audit
records as data-modifying CTEs, and the reads beside them. Its items are given as JSON, one text
parameter per list: the driver adapts a text at once and a list element by element, which cost
more than the statement. Any error undoes the whole statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.cluster import Owner
from aigrid.store.process_records import (
    COLUMNS,
    FINAL_SQL,
    FINAL_STATES,
    LIVE_SQL,
    OWNED_SQL,
    PG_NOW,
    STEP_KINDS,
    AuditEntry,
    NotOwner,
    ProcessRecord,
    StepKind,
    StepUsage,
    record_of,
)


@dataclass(frozen=True, slots=True)
class StepWrite:
    """One process's step as ``ProcessStore.append`` writes it."""

    pid: str
    entries: list[tuple[StepKind, dict[str, Any]]]
    usage: StepUsage
    audit: AuditEntry | None
    state: str | None
    result: str | None
    owner: Owner | None
    at: int


@dataclass(frozen=True, slots=True)
class Read:
    """One process to read, as ``ProcessStore.get`` reads it."""

    pid: str


BatchItem = StepWrite | Read


def step_write(
    pid: str,
    kind: StepKind,
    payload: dict[str, Any],
    usage: StepUsage | None,
    audit: AuditEntry | None,
    state: str | None,
    result: str | None,
    after: Sequence[tuple[StepKind, dict[str, Any]]],
    owner: Owner | None,
) -> StepWrite:
    """``append``'s arguments as one write, its journal entries' kinds checked."""
    entries = [(kind, payload), *after]
    if any(k not in STEP_KINDS for k, _ in entries):
        raise ValueError(f"unknown step kind in {[k for k, _ in entries]!r}")
    return StepWrite(pid, entries, usage or StepUsage(), audit, state, result, owner, now_us())


def not_stepped(pid: str, current: str, owner: Owner | None) -> Exception:
    """Why a step's write changed no row: the process is another owner's, or it has ended."""
    if owner is not None and current not in FINAL_STATES:
        return NotOwner(pid, owner)
    return AccountError(409, f"Process {pid} has ended ({current}); it takes no more steps.")


# A process appears once in a batch (an UPDATE changes a row once; Batcher keys items by pid). A
# signal's state (suspended, killed) stands over the step's: SET sees the row as it was. Rows come
# back tagged: "stepped" (written), "found" (read), "refused" (a write that changed nothing: the
# row as it stands says why). A pid with no row has no process.
PG_BATCH = (
    "WITH b AS (SELECT * FROM json_to_recordset(CAST(:steps AS JSON)) AS b(b_pid VARCHAR, "
    "b_entries INTEGER, b_prompt BIGINT, b_completion BIGINT, b_cost BIGINT, b_state VARCHAR, "
    "b_result TEXT, b_node INTEGER, b_epoch BIGINT, b_at BIGINT)), "
    "moved AS (UPDATE processes SET steps = steps + b_entries, prompt_tokens = prompt_tokens + b_prompt, "
    "completion_tokens = completion_tokens + b_completion, cost_micro = cost_micro + b_cost, "
    f"updated_at_us = b_at, state = CASE WHEN b_state IS NOT NULL AND state IN ({LIVE_SQL}) THEN b_state "
    f"ELSE state END, result = CASE WHEN b_state IS NOT NULL AND state IN ({LIVE_SQL}) "
    "THEN COALESCE(b_result, result) ELSE result END "
    f"FROM b WHERE pid = b_pid AND pid = ANY(ARRAY(SELECT b_pid FROM b)) AND state NOT IN ({FINAL_SQL}) "
    "AND (b_node IS NULL OR ("
    + OWNED_SQL.format(node="b_node", epoch="b_epoch", now=PG_NOW)
    + f")) RETURNING {COLUMNS}, b_entries, b_at), "
    "journal AS (INSERT INTO process_journal (pid, seq, kind, payload, created_at_us) "
    "SELECT moved.pid, moved.steps - moved.b_entries + e.n, e.kind, e.payload, moved.b_at FROM moved "
    "JOIN json_to_recordset(CAST(:entries AS JSON)) AS e(pid VARCHAR, n INTEGER, kind VARCHAR, payload TEXT) "
    "ON e.pid = moved.pid), "
    "audit AS (INSERT INTO tool_audit (at_us, tenant_id, pid, agent, tool, arguments_sha256, outcome) "
    "SELECT moved.b_at, moved.tenant_id, moved.pid, moved.agent, a.tool, a.digest, a.outcome FROM moved "
    "JOIN json_to_recordset(CAST(:audits AS JSON)) AS a(pid VARCHAR, tool VARCHAR, digest VARCHAR, "
    "outcome VARCHAR) ON a.pid = moved.pid) "
    f"SELECT 'stepped', {COLUMNS} FROM moved "
    "UNION ALL SELECT 'found', p.* FROM json_array_elements_text(CAST(:reads AS JSON)) AS r(pid), "
    f"LATERAL (SELECT {COLUMNS} FROM processes WHERE processes.pid = r.pid OFFSET 0) AS p "
    f"UNION ALL SELECT 'refused', p.* FROM b, LATERAL (SELECT {COLUMNS} FROM processes "
    "WHERE processes.pid = b.b_pid OFFSET 0) AS p WHERE b.b_pid NOT IN (SELECT pid FROM moved)"
)


def batch_values(items: Sequence[BatchItem]) -> dict[str, str]:
    """``PG_BATCH``'s parameters: JSON arrays of the steps, their entries and audit records, and the reads."""
    writes = [item for item in items if isinstance(item, StepWrite)]
    steps = [
        {
            "b_pid": w.pid,
            "b_entries": len(w.entries),
            "b_prompt": w.usage.prompt_tokens,
            "b_completion": w.usage.completion_tokens,
            "b_cost": w.usage.cost_micro,
            "b_state": w.state,
            "b_result": w.result,
            "b_node": None if w.owner is None else w.owner.node_id,
            "b_epoch": None if w.owner is None else w.owner.epoch,
            "b_at": w.at,
        }
        for w in writes
    ]
    # A payload goes as the text the journal keeps, so it is stored exactly as it was written.
    entries = [
        {"pid": w.pid, "n": n, "kind": kind, "payload": orjson.dumps(payload).decode()}
        for w in writes
        for n, (kind, payload) in enumerate(w.entries, 1)
    ]
    audits = [
        {
            "pid": w.pid,
            "tool": w.audit.tool[:128],
            "digest": w.audit.arguments_sha256,
            "outcome": w.audit.outcome,
        }
        for w in writes
        if w.audit is not None
    ]
    reads = [item.pid for item in items if isinstance(item, Read)]
    lists = {"steps": steps, "entries": entries, "audits": audits, "reads": reads}
    return {name: orjson.dumps(rows).decode() for name, rows in lists.items()}


def batch_outcomes(items: Sequence[BatchItem], rows: Sequence[Any]) -> list[ProcessRecord | Exception]:
    """Each item's process, or why it has none, from ``PG_BATCH``'s tagged rows."""
    tagged = {row[1]: (row[0], record_of(row[1:])) for row in rows}
    outcomes: list[ProcessRecord | Exception] = []
    for item in items:
        tag, record = tagged.get(item.pid, ("", None))
        if record is None:
            outcomes.append(AccountError(404, f"No process {item.pid}."))
        elif tag == "refused" and isinstance(item, StepWrite):
            outcomes.append(not_stepped(item.pid, record.state, item.owner))
        else:
            outcomes.append(record)
    return outcomes
