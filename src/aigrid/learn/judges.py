"""How each suite's task is run against a model and judged by its verifier.

The entry's task is planned and its read-only steps run against the live services, exactly as an
entry would before asking the user; what the plan would buy is judged, and nothing is bought. The
compiler's task is compiled against the suite's own tool catalog (fictional services whose tools
never run), at a fixed "now". The tools suite's task is one chat completion with the task's tools
offered. With experience on, each is shown the tenant's nearest verified examples, as in service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

import orjson

from aigrid.entry.calls import Caller, Refused, Unknown
from aigrid.entry.catalog import Catalog
from aigrid.entry.plan import Plan, PlanError
from aigrid.entry.planner import (
    PLAN_MAX_TOKENS,
    REDRAW_TEMPERATURE,
    Planner,
    Recall,
    WriteFn,
    checked_written,
)
from aigrid.entry.reading import Purchase, Reading, read
from aigrid.errors import APIError
from aigrid.kernel.compiler import CompileError, Compiler, Draft, SpecRecall, ToolChoice
from aigrid.kernel.tools import CallContext, Tool, wire_name
from aigrid.learn.suites import TOOL_CATALOG
from aigrid.learn.verifiers import (
    Verdict,
    compiler_verdict,
    entry_verdict,
    tool_call_verdict,
    written_arguments,
)

# The compiler suite's "now": a Monday morning in Shanghai, as its expectations were written.
COMPILER_NOW = datetime.fromisoformat("2026-11-23T10:00:00+08:00")
# How varied best-of-N's answers are: OpenAI's default temperature.
BEST_OF_TEMPERATURE = 1.0
# The entry suite's "today": its tasks name days in December 2026.
ENTRY_TODAY = date(2026, 12, 1)


@dataclass(frozen=True, slots=True)
class Judged:
    """A task's verdict, the model's answer in words, and how long it took."""

    verdict: Verdict
    answer: str | None
    seconds: float


class Judge(Protocol):
    """Runs one task of a suite against a model and judges it."""

    async def __call__(
        self, tenant_id: int, task: dict[str, Any], model: str, experience: bool, best_of: int = 1
    ) -> Judged:
        """The verdict on ``task`` with ``model``, shown experience or not (``best_of`` answers drawn)."""
        ...


class EntryJudge:
    """Plans an entry task and judges what the plan would buy, buying nothing."""

    def __init__(
        self,
        catalog: Callable[[int], Awaitable[Catalog]],
        writer: Callable[[str, float], WriteFn],
        recall: Recall,
    ) -> None:
        self._catalog = catalog
        self._writer = writer
        self._recall = recall

    async def __call__(
        self, tenant_id: int, task: dict[str, Any], model: str, experience: bool, best_of: int = 1
    ) -> Judged:
        """Plan (or draw ``best_of`` plans and keep the first the checker accepts), read, judge."""
        began = time.perf_counter()
        found = await self._catalog(tenant_id)
        recall = self._recall if experience else None
        caller = Caller(f"eval-{task['id']}", tenant_id)
        plan: Plan | None = None
        refusal: str | None = None
        answer: str | None = None
        reading: Reading | None = None
        try:
            if best_of > 1:
                answer, plan = await self._best_of(tenant_id, task, model, recall, found, best_of)
            else:
                planner = Planner(self._writer(model, 0.0), recall, self._writer(model, REDRAW_TEMPERATURE))
                planned = await planner.plan(
                    tenant_id,
                    str(task["user"]),
                    str(task["input"]),
                    found,
                    ENTRY_TODAY,
                    lambda plan: read(plan, found, caller),
                )
                answer, plan, reading = planned.answer, planned.plan, planned.reading
        except PlanError as exc:
            refusal = str(exc)
        verdict = await plan_verdict(task, plan, refusal, found, caller, reading)
        return Judged(verdict, answer, time.perf_counter() - began)

    async def _best_of(
        self, tenant_id: int, task: dict[str, Any], model: str, recall: Recall | None, found: Catalog, n: int
    ) -> tuple[str, Plan]:
        """``n`` answers drawn together; the first that checks as a plan and whose reading runs.

        The checker knows nothing of the task's right answer: it is what a deployment could run
        before asking the user (the plan's own checks and its read-only steps)."""
        write = self._writer(model, BEST_OF_TEMPERATURE)
        asked = await Planner(write, recall).prepare(
            tenant_id, str(task["user"]), str(task["input"]), found, ENTRY_TODAY
        )
        answers = await asyncio.gather(*(write(tenant_id, asked.messages, asked.schema) for _ in range(n)))
        refusal = PlanError("no answer")
        for answer in answers:
            try:
                plan = checked_written(answer, found, asked.shown)
                if plan.steps:
                    await read(plan, found, Caller(f"eval-{task['id']}-check", tenant_id))
                return answer, plan
            except PlanError as exc:
                refusal = exc
        raise refusal


async def plan_verdict(
    task: dict[str, Any],
    plan: Plan | None,
    refusal: str | None,
    found: Catalog,
    caller: Caller,
    reading: Reading | None = None,
) -> Verdict:
    """The entry's verifier on a plan (or a refusal): its read-only steps run (unless ``reading`` is
    what they found already), what it would buy judged."""
    purchases: list[Purchase] | None = None
    if reading is not None:
        purchases = reading.purchases
    elif plan is not None:
        try:
            purchases = (await read(plan, found, caller)).purchases if plan.steps else []
        except PlanError as exc:
            refusal = str(exc)
    available = await available_cents(found, caller, str(task["user"])) if purchases else None
    return entry_verdict(task, purchases, refusal, available)


async def available_cents(found: Catalog, caller: Caller, user: str) -> int | None:
    """What the user's wallet can pay now, if the payment service says."""
    balance = found.get(f"{found.payment}.balance") if found.payment else None
    if balance is None:
        return None
    try:
        wallet = await caller.once(balance, {"user": user}, f"{caller.entry_id}:balance")
    except (Refused, Unknown):
        return None
    value = wallet.get("available_cents") if isinstance(wallet, dict) else None
    return int(value) if isinstance(value, int) else None


async def _never_run(_arguments: dict[str, Any], _context: CallContext) -> Any:
    raise RuntimeError("an eval's tools never run")


def catalog_tools(path: Any = TOOL_CATALOG) -> list[Tool]:
    """The suite's fictional services' tools, each with a handler that refuses to run."""
    entries = orjson.loads(path.read_bytes())
    return [Tool(e["name"], e["description"], _never_run, e["parameters"]) for e in entries]


class CompilerJudge:
    """Compiles a description against the suite's tools and judges the spec."""

    def __init__(
        self,
        writer: Callable[[str], WriteFn],
        builtins: Callable[[int], list[Tool]],
        agent_model: str,
        recall: SpecRecall,
        choose: ToolChoice | None = None,
    ) -> None:
        self._writer = writer
        self._builtins = builtins
        self._agent_model = agent_model
        self._recall = recall
        self._choose = choose
        self._catalog = catalog_tools()

    def tools(self, tenant_id: int) -> list[Tool]:
        """What a compile in this suite may grant: the built-ins and the suite's catalog."""
        return [*self._builtins(tenant_id), *self._catalog]

    async def __call__(
        self, tenant_id: int, task: dict[str, Any], model: str, experience: bool, best_of: int = 1
    ) -> Judged:
        """Compile, judge."""
        began = time.perf_counter()
        compiler = Compiler(
            self._writer(model),
            self._agent_model,
            self._recall if experience else None,
            self._choose if experience else None,
        )
        tools = self.tools(tenant_id)
        draft: Draft | None = None
        refusal: str | None = None
        timezone = str(task.get("timezone") or "Asia/Shanghai")
        try:
            draft = await compiler.compile(tenant_id, str(task["description"]), tools, COMPILER_NOW, timezone)
        except CompileError as exc:
            refusal = exc.message
        verdict = compiler_verdict({**task, "timezone": timezone}, draft, refusal, {t.name for t in tools})
        answer = None if draft is None else draft.text
        return Judged(verdict, answer, time.perf_counter() - began)


# One chat completion, metered to the tenant as the agent named.
AskFn = Callable[[int, str, dict[str, Any]], Awaitable[dict[str, Any]]]
# The nearest verified (request, call) examples for a request.
CallRecall = Callable[[int, str], Awaitable[list[tuple[str, dict[str, Any]]]]]


class ToolsJudge:
    """Offers a task's tools in one chat completion and judges the call the model makes."""

    def __init__(self, ask: AskFn, recall: CallRecall) -> None:
        self._ask = ask
        self._recall = recall
        self._tools = {t.name: t for t in catalog_tools()}

    async def __call__(
        self, tenant_id: int, task: dict[str, Any], model: str, experience: bool, best_of: int = 1
    ) -> Judged:
        """Ask, judge."""
        began = time.perf_counter()
        offered = [self._tools[n] for n in task["tools"] if n in self._tools]
        messages: list[dict[str, Any]] = []
        if experience:
            for n, (text, shown) in enumerate(await self._recall(tenant_id, str(task["input"]))):
                call_id = f"call_example_{n}"
                messages.append({"role": "user", "content": text})
                messages.append(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": call_id,
                                "type": "function",
                                "function": {
                                    "name": wire_name(str(shown["name"])),
                                    "arguments": orjson.dumps(shown.get("arguments", {})).decode(),
                                },
                            }
                        ],
                    }
                )
                messages.append({"role": "tool", "tool_call_id": call_id, "content": "done"})
        messages.append({"role": "user", "content": str(task["input"])})
        body = {
            "model": model,
            "messages": messages,
            "tools": [t.schema() for t in offered],
            "tool_choice": "required",
            "temperature": 0,
            "max_tokens": 200,
        }
        call: dict[str, Any] | None = None
        answer: str | None = None
        try:
            message = await self._ask(tenant_id, "eval", body)
            calls = message.get("tool_calls") or []
            if calls:
                function = calls[0]["function"]
                name = str(function["name"]).replace("__", ".")
                call = {"name": name, "arguments": written_arguments(function)}
                answer = orjson.dumps(call).decode()
            else:
                answer = str(message.get("content") or "")
        except APIError as exc:
            answer = f"the model refused: {exc.message}"
        schemas = {t.name: t.parameters for t in offered}
        return Judged(tool_call_verdict(task, call, schemas), answer, time.perf_counter() - began)


def plan_writer(json_writer: Callable[[str, str, int, float], WriteFn]) -> Callable[[str, float], WriteFn]:
    """The planner's writer for a model at a temperature, metered as the eval's."""
    return lambda model, temperature: json_writer(model, "eval", PLAN_MAX_TOKENS, temperature)
