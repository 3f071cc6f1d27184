"""Running a process one step at a time, from its journal, so that any worker can take the next step.

A step is one model call or one tool call. What the process has done is read back from the journal
before every step; nothing else is kept between steps, so a restarted server (or another worker)
goes on where the journal ends. A tool call is journaled before it runs and its result after: a
call whose result is journaled never runs again, and one cut off mid-flight runs again with the
same idempotency key (``pid:seq``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import orjson

from aigrid.clock import now_us, period_start_us
from aigrid.errors import APIError
from aigrid.kernel.context import fit
from aigrid.kernel.tools import CallContext, Tool, ToolOutcome, ToolRegistry
from aigrid.spec import AgentSpec
from aigrid.store.accounts import AccountError
from aigrid.store.agents import AgentStore
from aigrid.store.cluster import Owner
from aigrid.store.processes import (
    AuditEntry,
    NotOwner,
    ProcessRecord,
    ProcessStore,
    Step,
    StepKind,
    StepUsage,
)


class ModelClient(Protocol):
    """Calls a chat model for a process and says what the call used."""

    def context_window(self, model: str) -> int | None:
        """The model's context in tokens, if known: conversations are kept inside it."""

    async def chat(self, process: ProcessRecord, body: dict[str, Any]) -> tuple[dict[str, Any], StepUsage]:
        """The assistant message the model answered with, and its usage."""


@dataclass(slots=True)
class _Replay:
    """A process's conversation and position, rebuilt from its journal up to step ``seq``."""

    messages: list[dict[str, Any]]
    seq: int = 0
    model_turns: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)  # tool calls still without a result
    started: dict[str, int] = field(default_factory=dict)  # call id -> seq of its tool_call step
    decisions: dict[str, str] = field(default_factory=dict)  # call id -> pending|approved|denied
    answer: str | None = None  # the final answer, when the last model turn called no tool

    def apply(self, seq: int, kind: str, payload: dict[str, Any]) -> None:
        """Take in the journaled step ``seq``."""
        self.seq = seq
        if kind == "model_response":
            message = payload["message"]
            self.messages.append(message)
            self.model_turns += 1
            self.pending = list(message.get("tool_calls") or [])
            self.started = {}
            self.answer = None if self.pending else str(message.get("content") or "")
        elif kind == "tool_call":
            self.started[payload["id"]] = seq
        elif kind == "approval" and self.decisions.get(payload["id"]) in (None, "pending"):
            # The first decision stands; a second one, from a person who clicked late, does not.
            self.decisions[payload["id"]] = payload["status"]
        elif kind == "tool_result":
            self.messages.append(
                {"role": "tool", "tool_call_id": payload["id"], "content": payload["content"]}
            )
            self.pending = [c for c in self.pending if c.get("id") != payload["id"]]


def replay(spec: AgentSpec, process: ProcessRecord, steps: list[Step]) -> _Replay:
    """The conversation so far: instructions, the input, and every journaled turn and result."""
    state = _Replay(
        [{"role": "system", "content": spec.instructions}, {"role": "user", "content": process.input}]
    )
    for step in steps:
        state.apply(step.seq, step.kind, step.payload)
    return state


Entry = tuple[StepKind, dict[str, Any]]
# Replays kept between steps, the most recently stepped: a step then reads only the process row.
_CACHED_REPLAYS = 4096


# What an agent has used in a period: (tenant_id, agent, since_us) -> (tokens, cost_micro).
SpentFn = Callable[[int, str, int], tuple[int, int]]
BUDGET_REASON = "budget: "
APPROVAL_REASON = "approval: "
SLEEP_REASON = "waiting for process "
# The longest a step waits before trying a rate-limited or overloaded grid again.
_MAX_RETRY_WAIT_S = 5.0
# The owner a step writes as, fixed when the step begins: a step begun under an epoch that has
# since lost its lease commits nothing, even once its server holds a newer epoch. Store calls run
# on a copy of the step's context (asyncio.to_thread), so they read it there.
_OWNER: contextvars.ContextVar[Owner | None] = contextvars.ContextVar("step_owner", default=None)


class Runner:
    """Takes processes' steps: model calls through a ModelClient, tool calls through the registry."""

    def __init__(
        self,
        model: ModelClient,
        processes: ProcessStore,
        agents: AgentStore,
        tools: ToolRegistry,
        spent: SpentFn | None = None,
    ) -> None:
        self._model = model
        self._processes = processes
        self._agents = agents
        self._tools = tools
        self._spent = spent
        # Only a cache: a replay is used while the process's step count says nothing was
        # journaled since, and catches up from the journal otherwise.
        self._replays: OrderedDict[str, _Replay] = OrderedDict()

    async def run(self, pid: str, owner: Owner | None = None) -> ProcessRecord:
        """Take steps while the process runs: until it ends, or waits for a person or a budget."""
        process = await self.step(pid, owner)
        while process.state == "running":
            process = await self.step(pid, owner)
        return process

    def _set_state(self, pid: str, state: Any, **kwargs: Any) -> ProcessRecord:
        """ProcessStore.set_state as the step's owner (blocking, like it)."""
        return self._processes.set_state(pid, state, owner=_OWNER.get(), **kwargs)

    async def _spec(self, process: ProcessRecord) -> AgentSpec:
        agents = self._agents
        # A version read once never changes: no thread hop to a database server for it.
        known = agents.cached(process.tenant_id, process.agent, process.agent_version)
        if known is not None:
            return known.spec
        return (await agents.calls(agents.get, process.tenant_id, process.agent, process.agent_version)).spec

    async def step(self, pid: str, owner: Owner | None = None) -> ProcessRecord:
        """Take the process's next step: its pending tool calls, or a model call and the tool calls
        it asks for, or the final answer.

        A process that is not running (paused or ended since it was queued) is left as it is. With
        an ``owner``, every write of the step is refused (NotOwner) unless the process is that
        owner's and its lease runs.
        """
        token = _OWNER.set(owner)
        try:
            return await self._step(pid)
        finally:
            _OWNER.reset(token)

    async def _step(self, pid: str) -> ProcessRecord:
        process = await self._processes.aget(pid)
        owner = _OWNER.get()
        if owner is not None and (process.owner_node_id, process.owner_epoch) != (owner.node_id, owner.epoch):
            # Queued here before another server took it up (or before this one's epoch changed).
            self._replays.pop(pid, None)
            raise NotOwner(pid, owner)
        if process.state == "ready":
            process = await self._processes.calls(self._set_state, pid, "running", expect={"ready"})
        if process.state != "running":  # paused, waiting or ended since it was queued
            self._replays.pop(pid, None)
            return process
        spec = await self._spec(process)
        state = await self._replayed(process, spec)
        if state.pending:
            return await self._tool_steps(process, spec, state)
        if state.answer is not None:
            process = await self._processes.calls(self._set_state, pid, "done", result=state.answer)
        elif state.model_turns >= spec.max_steps:
            reason = f"the agent took its {spec.max_steps} steps without a final answer"
            process = await self._processes.calls(self._set_state, pid, "failed", reason=reason)
        elif (over := await self._over_budget(process, spec)) is not None:
            process = await self._processes.calls(self._set_state, pid, "suspended", reason=over)
        else:
            try:
                process = await self._model_step(process, spec, state)
            except APIError as exc:
                process = await self._model_refused(process, exc)
            return await self._tool_steps(process, spec, state)
        self._replays.pop(pid, None)
        return process

    async def _replayed(self, process: ProcessRecord, spec: AgentSpec) -> _Replay:
        """The process's replay, caught up with its journal."""
        state = self._replays.pop(process.pid, None)
        if state is None or state.seq > process.steps:
            state = replay(spec, process, [])
        if state.seq < process.steps:
            await self._catch_up(process.pid, state)
        self._replays[process.pid] = state
        if len(self._replays) > _CACHED_REPLAYS:
            self._replays.popitem(last=False)
        return state

    async def _journal(
        self,
        process: ProcessRecord,
        state: _Replay,
        entries: list[Entry],
        usage: StepUsage | None = None,
        audit: AuditEntry | None = None,
        *,
        move: Literal["running", "waiting_tool", "done"] | None = None,
        result: str | None = None,
    ) -> ProcessRecord:
        """Journal steps in one commit and take them into the process's replay."""
        (kind, payload), *after = entries
        record = await self._processes.aappend(
            process.pid,
            kind,
            payload,
            usage,
            audit,
            state=move,
            result=result,
            after=after,
            owner=_OWNER.get(),
        )
        first = record.steps - len(entries) + 1
        if first == state.seq + 1:
            for i, (kind, payload) in enumerate(entries):
                state.apply(first + i, kind, payload)
        else:  # someone journaled between (a person's decision): read what they wrote too
            await self._catch_up(process.pid, state)
        return record

    async def _catch_up(self, pid: str, state: _Replay) -> None:
        """Take into ``state`` the steps journaled after the one it reached."""
        for step in await self._processes.calls(self._processes.journal, pid, state.seq):
            state.apply(step.seq, step.kind, step.payload)

    async def _over_budget(self, process: ProcessRecord, spec: AgentSpec) -> str | None:
        """Why the agent's own budget forbids another model call now, or None."""
        budget = spec.budget
        if budget is None or self._spent is None:
            return None
        since = period_start_us(budget.period, now_us())
        tokens, cost = await asyncio.to_thread(self._spent, process.tenant_id, spec.name, since)
        used = f"{BUDGET_REASON}agent '{spec.name}'"
        if budget.tokens is not None and tokens >= budget.tokens:
            return f"{used} used {tokens} of its {budget.tokens} tokens this {budget.period}"
        if budget.cost is not None and cost >= int(budget.cost * 1_000_000):
            return f"{used} spent its cost budget of {budget.cost} this {budget.period}"
        return None

    async def _model_refused(self, process: ProcessRecord, exc: APIError) -> ProcessRecord:
        """A refused model call: a spent tenant budget suspends, load waits, anything else fails."""
        if exc.code == "insufficient_quota":
            reason = f"{BUDGET_REASON}{exc.message}"
            return await self._processes.calls(self._set_state, process.pid, "suspended", reason=reason)
        if exc.status == 429 or exc.status >= 500:
            await asyncio.sleep(_retry_wait(exc.headers))
            return process
        reason = f"the model call was refused ({exc.status}): {exc.message}"
        return await self._processes.calls(self._set_state, process.pid, "failed", reason=reason)

    async def _model_step(self, process: ProcessRecord, spec: AgentSpec, state: _Replay) -> ProcessRecord:
        """Call the model; journal the request, its answer, and the first tool call it asks for."""
        schemas = [t.schema() for t in self._tools.granted(spec, process.tenant_id)]
        window = self._model.context_window(spec.model)
        # A copy: the replay grows on, and the request must stay what was sent.
        messages = list(state.messages if window is None else fit(state.messages, window, schemas))
        body: dict[str, Any] = {"model": spec.model, "messages": messages}
        if schemas:
            body["tools"] = schemas
        message, usage = await self._model.chat(process, body)
        # The request and its answer are journaled together, before the next step: a call cut
        # off by a crash left nothing, and is made again. A final answer ends the process in the
        # same commit; a tool call that needs no person is journaled with it, about to run.
        entries: list[Entry] = [
            ("model_request", {"messages": len(messages), "tools": len(schemas)}),
            ("model_response", {"message": message, "usage": asdict(usage)}),
        ]
        calls = message.get("tool_calls") or []
        if not calls:
            answer = str(message.get("content") or "")
            return await self._journal(process, state, entries, usage, move="done", result=answer)
        start = self._start(process, spec, calls[0], None)
        if start is None:
            return await self._journal(process, state, entries, usage)
        return await self._journal(process, state, [*entries, start], usage, move="waiting_tool")

    def _resolve(
        self, process: ProcessRecord, call: dict[str, Any]
    ) -> tuple[Tool | None, str, dict[str, Any]]:
        """The tool a call names (None if the tenant has no such tool), its kernel name, its function."""
        function = call.get("function") or {}
        tool = self._tools.get(str(function.get("name")), process.tenant_id)
        # The model calls a tool by the name it was shown (shop__search); the kernel knows shop.search.
        return tool, tool.name if tool is not None else str(function.get("name")), function

    def _start(
        self, process: ProcessRecord, spec: AgentSpec, call: dict[str, Any], decision: str | None
    ) -> Entry | None:
        """The tool_call step that starts ``call``, or None while it waits for a person's yes."""
        tool, name, _ = self._resolve(process, call)
        if tool is not None and spec.grants(name) and spec.needs_approval(name) and decision != "approved":
            return None
        return ("tool_call", {"id": str(call.get("id")), "tool": name})

    async def _tool_steps(self, process: ProcessRecord, spec: AgentSpec, state: _Replay) -> ProcessRecord:
        """Run the pending tool calls in turn, while the process is live and no person is asked."""
        while state.pending and process.state in ("running", "waiting_tool"):
            process = await self._tool_step(process, spec, state)
        if process.finished:
            self._replays.pop(process.pid, None)
        return process

    async def _tool_step(self, process: ProcessRecord, spec: AgentSpec, state: _Replay) -> ProcessRecord:
        call = state.pending[0]
        call_id = str(call.get("id"))
        tool, name, function = self._resolve(process, call)
        seq = state.started.get(call_id)
        if seq is None:
            start = self._start(process, spec, call, state.decisions.get(call_id))
            if start is None:
                decision = state.decisions.get(call_id)
                return await self._await_approval(
                    process, state, call_id, name, function.get("arguments"), decision
                )
            started = await self._journal(process, state, [start], move="waiting_tool")
            seq = started.steps
            if started.state != "waiting_tool":  # signalled meanwhile: the call runs on resume
                return started
        raw_arguments = function.get("arguments")
        outcome = await self._call(process, spec, tool, name, raw_arguments, f"{process.pid}:{seq}")
        if outcome.sleep_until is not None:
            return await self._sleep(process.pid, outcome.sleep_until)
        result = {"id": call_id, "tool": name, "ok": outcome.ok, "content": outcome.content}
        audit = AuditEntry(
            name, _digest(raw_arguments), "refused" if outcome.refused else "ok" if outcome.ok else "error"
        )
        entries: list[Entry] = [("tool_result", result)]
        following = state.pending[1:]
        start = (
            None
            if not following
            else self._start(process, spec, following[0], state.decisions.get(str(following[0].get("id"))))
        )
        if start is not None:
            entries.append(start)
        move: Literal["running", "waiting_tool"] = "waiting_tool" if start is not None else "running"
        return await self._journal(process, state, entries, None, audit, move=move)

    async def _sleep(self, pid: str, until_pid: str) -> ProcessRecord:
        """Sleep until ``until_pid`` ends; the call runs again then, with the same key, and answers."""
        try:
            asleep = await self._processes.calls(
                self._set_state,
                pid,
                "sleeping",
                reason=f"{SLEEP_REASON}{until_pid}",
                expect={"running", "waiting_tool"},
            )
        except AccountError:  # signalled meanwhile: the signal stands
            return await self._processes.calls(self._processes.get, pid)
        # The awaited process may have ended before this one fell asleep, with no one to wake it.
        awaited = await self._processes.calls(self._processes.get, until_pid)
        if awaited.finished:
            with contextlib.suppress(AccountError):
                return await self._processes.calls(self._set_state, pid, "running", expect={"sleeping"})
        return asleep

    async def _await_approval(
        self,
        process: ProcessRecord,
        state: _Replay,
        call_id: str,
        name: str,
        arguments: Any,
        decision: str | None,
    ) -> ProcessRecord:
        """Ask a person about a call (once), wait in ``waiting_approval``, or refuse a denied one."""
        if decision == "denied":
            result = {
                "id": call_id,
                "tool": name,
                "ok": False,
                "content": "refused: a person denied this call",
            }
            audit = AuditEntry(name, _digest(arguments), "refused")
            return await self._journal(process, state, [("tool_result", result)], None, audit, move="running")
        if decision is None:
            request = {"id": call_id, "tool": name, "arguments": arguments, "status": "pending"}
            await self._journal(process, state, [("approval", request)])
        return await self._processes.calls(
            self._set_state, process.pid, "waiting_approval", reason=f"{APPROVAL_REASON}{name}"
        )

    async def _call(
        self,
        process: ProcessRecord,
        spec: AgentSpec,
        tool: Tool | None,
        name: str,
        raw_arguments: Any,
        key: str,
    ) -> ToolOutcome:
        # The capability check stands whatever the model or a tool's result asked for.
        if tool is None or not spec.grants(name):
            return ToolOutcome(
                False, f"refused: agent '{spec.name}' is not granted the tool '{name}'", refused=True
            )
        try:
            arguments = orjson.loads(raw_arguments) if isinstance(raw_arguments, str) else raw_arguments or {}
        except orjson.JSONDecodeError as exc:
            return ToolOutcome(False, f"error: the arguments are not valid JSON: {exc}")
        if not isinstance(arguments, dict):
            return ToolOutcome(False, "error: the arguments must be a JSON object")
        context = CallContext(process.pid, process.tenant_id, key, process.agent)
        return await self._tools.call(tool, arguments, context)


def _retry_wait(headers: dict[str, str]) -> float:
    """Seconds to wait before the next try: the grid's Retry-After, within bounds."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), "1")
    try:
        return min(max(float(raw), 0.0), _MAX_RETRY_WAIT_S)
    except ValueError:
        return 1.0


def _digest(arguments: Any) -> str:
    """The SHA-256 of a call's arguments as the model wrote them, for the audit log."""
    return hashlib.sha256(str(arguments if arguments is not None else "").encode()).hexdigest()
