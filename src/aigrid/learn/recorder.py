"""Every run leaves a judged trace: entries, compiles and processes, and the examples they teach.

Outcomes come from the world, not from the model: a saga that ended ``done`` after the user
confirmed what it would buy is a success (its plan is kept as an example for the tenant's next
plans); a plan the checker refused, a saga that failed or was compensated, a declined entry are
failures with their reasons (kept as failures, never shown as examples). An entry that only
answered a question succeeded as far as the world can tell; its plan is kept only when a person
says it was good (feedback). A compile that was saved is a success, a refused one a failure. A
process that answered is a success, unless a tool call it made did not validate or was answered
with an error; a failed or killed one is a failure.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from aigrid.entry.planner import Planned
from aigrid.kernel.compiler import Draft
from aigrid.kernel.tools import ToolRegistry
from aigrid.learn.experience import ExperienceMemory
from aigrid.learn.verifiers import journaled_call_problem, written_arguments
from aigrid.spec import AgentSpec
from aigrid.store.db import StoreCalls
from aigrid.store.entries import EntryRecord
from aigrid.store.processes import ProcessRecord, ProcessStore
from aigrid.store.traces import Outcome, TraceStore

log = logging.getLogger(__name__)


class _Recorder:
    """Writes traces, and keeps in the experience memory what they teach; ``model`` wrote the answers."""

    def __init__(self, traces: TraceStore, memory: ExperienceMemory, calls: StoreCalls, model: str) -> None:
        self._traces = traces
        self._memory = memory
        self._calls = calls
        self._model = model


class EntryRecorder(_Recorder):
    """Traces each entry's plan and outcome, and keeps what it teaches (an EntryObserver)."""

    async def planned(
        self, entry: EntryRecord, planned: Planned | None, error: str | None, seconds: float
    ) -> None:
        """Open the entry's trace with the prompt and answer, or close it failed when no plan held."""
        tools = [] if planned is None else [s.call for s in planned.plan.steps if hasattr(s, "call")]
        await self._calls(
            self._traces.record,
            entry.tenant_id,
            "entry",
            entry.id,
            entry.input,
            outcome="failure" if error else "pending",
            messages=None if planned is None else planned.messages,
            answer=None if planned is None else planned.answer,
            tools=tools,
            model=self._model if planned is not None or error else None,
            reason=error,
            latency_us=int(seconds * 1_000_000),
        )
        if error and planned is None:
            await self._memory.remember(
                entry.tenant_id, "plan", entry.input, {"steps": []}, "failure", entry.id, reason=error
            )

    async def ended(self, entry: EntryRecord) -> None:
        """Close the trace with the outcome; a confirmed saga that ended done teaches its plan."""
        bought = bool(entry.summary and entry.summary.get("purchases"))
        outcome: Outcome
        reason: str | None
        if entry.state == "done":
            outcome, reason = "success", None
        elif entry.state == "declined":
            outcome, reason = "failure", "the user declined it"
        else:
            outcome, reason = "failure", entry.answer or entry.state
        trace = await self._calls(self._traces.find, "entry", entry.id)
        if trace is None:  # a plan given with the request: traced only by how it ended
            await self._calls(
                self._traces.record,
                entry.tenant_id,
                "entry",
                entry.id,
                entry.input,
                outcome=outcome,
                reason=reason,
            )
        else:
            await self._calls(self._traces.close, "entry", entry.id, outcome, reason)
        if entry.plan is None or trace is None or trace.answer is None:
            return  # only what the model planned is its experience
        if outcome == "success" and bought:
            await self._memory.remember(entry.tenant_id, "plan", entry.input, entry.plan, "success", entry.id)
        elif outcome == "failure":
            await self._memory.remember(
                entry.tenant_id, "plan", entry.input, entry.plan, "failure", entry.id, reason=reason
            )


class CompileRecorder(_Recorder):
    """Traces compiles; a compiled spec that a person saved is a success the next compiles learn from."""

    async def compiled(self, tenant_id: int, description: str, draft: Draft) -> None:
        """A draft was made for ``description`` (shown, not saved yet)."""
        await self._calls(
            self._traces.record,
            tenant_id,
            "compile",
            f"draft:{tenant_id}:{draft.spec.name}",
            description,
            outcome="pending",
            answer=draft.text,
            tools=list(draft.spec.tools),
            model=self._model,
        )

    async def refused(self, tenant_id: int, description: str, reason: str) -> None:
        """The compiler refused: a failure, with its reason."""
        digest = hashlib.sha256(f"{tenant_id}:{description}".encode()).hexdigest()[:16]
        await self._calls(
            self._traces.record,
            tenant_id,
            "compile",
            f"refused:{digest}",
            description,
            outcome="failure",
            model=self._model,
            reason=reason,
        )
        await self._memory.remember(
            tenant_id, "spec", description, {"tools": []}, "failure", "compile", reason
        )

    async def saved(self, tenant_id: int, spec: AgentSpec, version: int) -> None:
        """A spec was saved; one compiled from a description teaches that description's spec."""
        if not spec.description:
            return
        subject = f"{spec.name}@{version}"
        draft = await self._calls(self._traces.find, "compile", f"draft:{tenant_id}:{spec.name}")
        await self._calls(
            self._traces.record,
            tenant_id,
            "compile",
            subject,
            spec.description,
            outcome="success",
            answer=None if draft is None else draft.answer,
            tools=list(spec.tools),
            model=self._model if draft is not None else None,
        )
        if draft is not None:
            await self._calls(self._traces.close, "compile", draft.subject, "success", f"saved as {subject}")
        example = {
            "tools": list(spec.tools),
            "trigger": next((t.model_dump(mode="json") for t in spec.triggers), None),
            "name": spec.name,
            "instructions": spec.instructions,
        }
        await self._memory.remember(tenant_id, "spec", spec.description, example, "success", subject)


class ProcessRecorder:
    """Traces each process that ends, judging its tool calls (an end listener of the kernel)."""

    def __init__(
        self, traces: TraceStore, processes: ProcessStore, tools: ToolRegistry, calls: StoreCalls
    ) -> None:
        self._traces = traces
        self._processes = processes
        self._tools = tools
        self._calls = calls

    async def ended(self, process: ProcessRecord) -> None:
        """Write the process's trace: input, answer, tools called, outcome and cost."""
        if not process.finished:
            return
        try:
            steps = await self._calls(self._processes.journal, process.pid)
            called, problems = self._judge_calls([(s.kind, s.payload) for s in steps])
            outcome: Outcome
            reason: str | None
            if process.state == "done":
                outcome, reason = ("failure", "; ".join(problems)) if problems else ("success", None)
            else:
                outcome, reason = "failure", f"{process.state}: {process.reason or ''}".strip()
            await self._calls(
                self._traces.record,
                process.tenant_id,
                "process",
                process.pid,
                process.input,
                outcome=outcome,
                answer=process.result,
                tools=called,
                model=None,
                reason=reason,
                cost_micro=process.cost_micro,
                latency_us=process.updated_at_us - process.created_at_us,
            )
        except Exception:  # a trace never changes how a process went
            log.exception("could not trace process %s", process.pid)

    def _judge_calls(self, steps: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[str]]:
        """The tools called, and what was wrong with any call (arguments, or an error answered)."""
        called: list[str] = []
        problems: list[str] = []
        arguments: dict[str, Any] = {}
        for kind, payload in steps:
            if kind == "model_response":
                for call in payload.get("message", {}).get("tool_calls") or []:
                    arguments[str(call.get("id"))] = written_arguments(call.get("function", {}))
            elif kind == "tool_result":
                name = str(payload.get("tool") or "")
                called.append(name)
                tool = self._tools.get(name)
                problem = journaled_call_problem(
                    arguments.get(str(payload.get("id"))),
                    None if tool is None else tool.parameters,
                    payload.get("content"),
                    bool(payload.get("ok")),
                )
                if problem is not None:
                    problems.append(f"{name}: {problem}")
        return called, problems
