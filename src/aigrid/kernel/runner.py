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
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from aigrid.errors import APIError
from aigrid.grid.limits import now_us, period_start_us
from aigrid.kernel.context import fit
from aigrid.kernel.spec import AgentSpec
from aigrid.kernel.tools import CallContext, Tool, ToolOutcome, ToolRegistry
from aigrid.store.accounts import AccountError
from aigrid.store.agents import AgentStore
from aigrid.store.processes import AuditEntry, ProcessRecord, ProcessStore, Step, StepUsage


class ModelClient(Protocol):
    """Calls a chat model for a process and says what the call used."""

    def context_window(self, model: str) -> int | None:
        """The model's context in tokens, if known: conversations are kept inside it."""

    async def chat(self, process: ProcessRecord, body: dict[str, Any]) -> tuple[dict[str, Any], StepUsage]:
        """The assistant message the model answered with, and its usage."""


@dataclass(slots=True)
class _Replay:
    """A process's conversation and position, rebuilt from its journal."""

    messages: list[dict[str, Any]]
    model_turns: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)  # tool calls still without a result
    started: dict[str, int] = field(default_factory=dict)  # call id -> seq of its tool_call step
    decisions: dict[str, str] = field(default_factory=dict)  # call id -> pending|approved|denied
    answer: str | None = None  # the final answer, when the last model turn called no tool


def replay(spec: AgentSpec, process: ProcessRecord, steps: list[Step]) -> _Replay:
    """The conversation so far: instructions, the input, and every journaled turn and result."""
    state = _Replay(
        [{"role": "system", "content": spec.instructions}, {"role": "user", "content": process.input}]
    )
    for step in steps:
        payload = step.payload
        if step.kind == "model_response":
            message = payload["message"]
            state.messages.append(message)
            state.model_turns += 1
            state.pending = list(message.get("tool_calls") or [])
            state.started = {}
            state.answer = None if state.pending else str(message.get("content") or "")
        elif step.kind == "tool_call":
            state.started[payload["id"]] = step.seq
        elif step.kind == "approval" and state.decisions.get(payload["id"]) in (None, "pending"):
            # The first decision stands; a second one, from a person who clicked late, does not.
            state.decisions[payload["id"]] = payload["status"]
        elif step.kind == "tool_result":
            state.messages.append(
                {"role": "tool", "tool_call_id": payload["id"], "content": payload["content"]}
            )
            state.pending = [c for c in state.pending if c.get("id") != payload["id"]]
    return state


# What an agent has used in a period: (tenant_id, agent, since_us) -> (tokens, cost_micro).
SpentFn = Callable[[int, str, int], tuple[int, int]]
BUDGET_REASON = "budget: "
APPROVAL_REASON = "approval: "
SLEEP_REASON = "waiting for process "
# The longest a step waits before trying a rate-limited or overloaded grid again.
_MAX_RETRY_WAIT_S = 5.0


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
        # A stored version of a spec never changes, so it is read once.
        self._specs: dict[tuple[int, str, int], AgentSpec] = {}

    async def run(self, pid: str) -> ProcessRecord:
        """Take steps while the process runs: until it ends, or waits for a person or a budget."""
        process = await self.step(pid)
        while process.state == "running":
            process = await self.step(pid)
        return process

    async def _spec(self, process: ProcessRecord) -> AgentSpec:
        key = (process.tenant_id, process.agent, process.agent_version)
        spec = self._specs.get(key)
        if spec is None:
            stored = await asyncio.to_thread(self._agents.get, *key)
            spec = self._specs[key] = stored.spec
        return spec

    async def step(self, pid: str) -> ProcessRecord:
        """Take the process's next step: a pending tool call, the final answer, or a model call.

        A process that is not running (paused or ended since it was queued) is left as it is.
        """
        process, steps = await self._processes.calls(self._processes.snapshot, pid)
        if process.state == "ready":
            process = await self._processes.calls(self._processes.set_state, pid, "running", expect={"ready"})
        if process.state != "running":  # paused, waiting or ended since it was queued
            return process
        spec = await self._spec(process)
        state = replay(spec, process, steps)
        if state.pending:
            return await self._tool_step(process, spec, state)
        if state.answer is not None:
            return await self._processes.calls(self._processes.set_state, pid, "done", result=state.answer)
        elif state.model_turns >= spec.max_steps:
            reason = f"the agent took its {spec.max_steps} steps without a final answer"
            return await self._processes.calls(self._processes.set_state, pid, "failed", reason=reason)
        else:
            over = await self._over_budget(process, spec)
            if over is not None:
                return await self._processes.calls(self._processes.set_state, pid, "suspended", reason=over)
            try:
                return await self._model_step(process, spec, state)
            except APIError as exc:
                return await self._model_refused(process, exc)

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
            return await self._processes.calls(
                self._processes.set_state, process.pid, "suspended", reason=reason
            )
        if exc.status == 429 or exc.status >= 500:
            await asyncio.sleep(_retry_wait(exc.headers))
            return process
        reason = f"the model call was refused ({exc.status}): {exc.message}"
        return await self._processes.calls(self._processes.set_state, process.pid, "failed", reason=reason)

    async def _model_step(self, process: ProcessRecord, spec: AgentSpec, state: _Replay) -> ProcessRecord:
        schemas = [t.schema() for t in self._tools.granted(spec, process.tenant_id)]
        window = self._model.context_window(spec.model)
        messages = state.messages if window is None else fit(state.messages, window, schemas)
        body: dict[str, Any] = {"model": spec.model, "messages": messages}
        if schemas:
            body["tools"] = schemas
        message, usage = await self._model.chat(process, body)
        # The request and its answer are journaled together, before the next step: a call cut
        # off by a crash left nothing, and is made again.
        return await self._processes.calls(
            self._processes.append,
            process.pid,
            "model_request",
            {"messages": len(messages), "tools": len(schemas)},
            usage,
            after=("model_response", {"message": message}),
        )

    async def _tool_step(self, process: ProcessRecord, spec: AgentSpec, state: _Replay) -> ProcessRecord:
        call = state.pending[0]
        call_id = str(call.get("id"))
        function = call.get("function") or {}
        tool = self._tools.get(str(function.get("name")), process.tenant_id)
        # The model calls a tool by the name it was shown (shop__search); the kernel knows shop.search.
        name = tool.name if tool is not None else str(function.get("name"))
        if tool is not None and spec.grants(name) and spec.needs_approval(name):
            decision = state.decisions.get(call_id)
            if decision != "approved":
                return await self._await_approval(process, call_id, name, function.get("arguments"), decision)
        seq = state.started.get(call_id)
        if seq is None:
            started = await self._processes.calls(
                self._processes.append,
                process.pid,
                "tool_call",
                {"id": call_id, "tool": name},
                state="waiting_tool",
            )
            seq = started.steps
        raw_arguments = function.get("arguments")
        outcome = await self._call(process, spec, tool, name, raw_arguments, f"{process.pid}:{seq}")
        if outcome.sleep_until is not None:
            return await self._sleep(process.pid, outcome.sleep_until)
        result = {"id": call_id, "tool": name, "ok": outcome.ok, "content": outcome.content}
        audit = AuditEntry(
            name, _digest(raw_arguments), "refused" if outcome.refused else "ok" if outcome.ok else "error"
        )
        return await self._processes.calls(
            self._processes.append, process.pid, "tool_result", result, None, audit, state="running"
        )

    async def _sleep(self, pid: str, until_pid: str) -> ProcessRecord:
        """Sleep until ``until_pid`` ends; the call runs again then, with the same key, and answers."""
        try:
            asleep = await self._processes.calls(
                self._processes.set_state,
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
                return await self._processes.calls(
                    self._processes.set_state, pid, "running", expect={"sleeping"}
                )
        return asleep

    async def _await_approval(
        self, process: ProcessRecord, call_id: str, name: str, arguments: Any, decision: str | None
    ) -> ProcessRecord:
        """Ask a person about a call (once), wait in ``waiting_approval``, or refuse a denied one."""
        pid = process.pid
        if decision == "denied":
            result = {
                "id": call_id,
                "tool": name,
                "ok": False,
                "content": "refused: a person denied this call",
            }
            audit = AuditEntry(name, _digest(arguments), "refused")
            return await self._processes.calls(
                self._processes.append, pid, "tool_result", result, None, audit
            )
        if decision is None:
            request = {"id": call_id, "tool": name, "arguments": arguments, "status": "pending"}
            await self._processes.calls(self._processes.append, pid, "approval", request)
        return await self._processes.calls(
            self._processes.set_state, pid, "waiting_approval", reason=f"{APPROVAL_REASON}{name}"
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
