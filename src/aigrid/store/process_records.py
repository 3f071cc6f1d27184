"""Processes as stored: their states, records, steps and audit entries (no database access here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from aigrid.store.accounts import AccountError
from aigrid.store.cluster import Owner

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


# SQL text the process statements share: the final and live states, the owner's check, the clock.
FINAL_SQL = ", ".join(f"'{state}'" for state in sorted(FINAL_STATES))
LIVE_SQL = "'running', 'waiting_tool'"
# The owner's check, in the statement that writes: the row must name the writer's node and epoch,
# and that epoch's lease must still run on the database's clock. An epoch whose lease ended never
# runs again (a renewal needs a running lease), so a zombie's write is refused for good. The
# processes row stays locked to the commit, so a takeover (which locks it too) comes before or after.
OWNED_SQL = (
    "owner_node_id = {node} AND owner_epoch = {epoch} AND EXISTS (SELECT 1 FROM cluster_nodes n "
    "WHERE n.id = {node} AND n.epoch = {epoch} AND n.lease_until_us > {now})"
)
# The database's clock in microseconds; SQLite (one machine) takes the Python clock as :now.
PG_NOW = "CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000) AS BIGINT)"


# The columns a process is read in, in ProcessRecord's order.
COLUMNS = (
    "pid, tenant_id, agent, agent_version, parent_pid, input, state, reason, priority, steps, "
    "prompt_tokens, completion_tokens, cost_micro, result, created_at_us, updated_at_us, origin, "
    "owner_node_id, owner_epoch"
)


def record_of(row: Any) -> ProcessRecord:
    """A process from a row of ``COLUMNS``, in their order."""
    return ProcessRecord(*row)
