"""What the experience memory hands each task kind, and how a suite's training split is taught to it.

The planner gets plans (``PlanExample``), the compiler specs' parts (``SpecExample``), a tool-calling
prompt earlier (request, call) pairs. Teaching reads only a suite's training split: each task's
reference answer (the teacher's plan, the task's own tools and trigger, the expected call) is
judged by the suite's verifier first, and only what it accepts is kept.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aigrid.entry.calls import Caller
from aigrid.entry.catalog import Catalog
from aigrid.entry.plan import PlanError
from aigrid.entry.planner import PlanExample, Recall, validated
from aigrid.entry.reading import read
from aigrid.kernel.compiler import SpecExample, SpecRecall
from aigrid.learn.experience import ExperienceMemory
from aigrid.learn.intent import acting_as_asked
from aigrid.learn.judges import CallRecall, available_cents, catalog_tools
from aigrid.learn.suites import suite, training
from aigrid.learn.teacher import NoReference, task_reference
from aigrid.learn.verifiers import arguments_problem, entry_verdict, must_buy_nothing
from aigrid.spec import AgentSpec
from aigrid.store.accounts import AccountError
from aigrid.store.experience import ExperienceKind

# How many refusals a teaching answer lists (the count says the rest).
_SHOWN_REFUSALS = 20


def plan_recall(memory: ExperienceMemory, k: int) -> Recall:
    """The planner's view of the memory: the nearest verified plans, those that act (or only answer)
    as the sentence asks first."""

    async def recall(tenant_id: int, text: str) -> list[PlanExample]:
        found = await memory.recall(tenant_id, "plan", text, k, acting_as_asked)
        return [PlanExample(e.text, e.example) for e in found.examples]

    return recall


def spec_recall(memory: ExperienceMemory, k: int) -> SpecRecall:
    """The compiler's view of the memory: the nearest verified specs' parts."""

    async def recall(tenant_id: int, text: str) -> list[SpecExample]:
        found = await memory.recall(tenant_id, "spec", text, k)
        return [
            SpecExample(
                e.text,
                tuple(str(t) for t in e.example.get("tools", [])),
                str(e.example.get("name") or ""),
                str(e.example.get("instructions") or e.text),
                _trigger_kind(e.example.get("trigger")),
            )
            for e in found.examples
        ]

    return recall


def _with_zone(trigger: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """A suite's trigger as a spec holds it: a cron fires in the task's time zone."""
    return (
        {**trigger, "timezone": task.get("timezone") or "UTC"} if trigger.get("kind") == "cron" else trigger
    )


def _trigger_kind(trigger: Any) -> str | None:
    return str(trigger["kind"]) if isinstance(trigger, dict) and trigger.get("kind") else None


def call_recall(memory: ExperienceMemory, k: int) -> CallRecall:
    """A tool-calling prompt's view of the memory: the nearest verified (request, call) pairs."""

    async def recall(tenant_id: int, text: str) -> list[tuple[str, dict[str, Any]]]:
        found = await memory.recall(tenant_id, "call", text, k)
        return [(e.text, e.example) for e in found.examples]

    return recall


@dataclass
class Teaching:
    """What teaching a suite did."""

    suite: str
    shared: bool
    taught: int = 0
    already: int = 0
    refusals: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """As ``POST /v1/learn/memory/teach`` answers."""
        return {
            "object": "teaching",
            "suite": self.suite,
            "shared": self.shared,
            "taught": self.taught,
            "already": self.already,
            "refused": len(self.refusals),
            "refusals": self.refusals[:_SHOWN_REFUSALS],
            "seconds": round(self.seconds, 1),
        }


class Teacher:
    """Puts a suite's verified training examples into a tenant's experience memory."""

    def __init__(
        self,
        memory: ExperienceMemory,
        catalog: Callable[[int], Awaitable[Catalog]],
        tool_names: Callable[[int], set[str]],
    ) -> None:
        self._memory = memory
        self._catalog = catalog
        self._tool_names = tool_names

    async def teach(
        self, tenant_id: int, suite_name: str, limit: int | None = None, shared: bool = False
    ) -> Teaching:
        """Teach the training split of ``suite_name`` (its first ``limit`` tasks); ``shared``: for all."""
        chosen = suite(suite_name)
        if limit is not None and limit < 1:
            raise AccountError(400, "limit must be at least 1.")
        tasks = training(chosen.name)[:limit]
        began = time.perf_counter()
        teaching = Teaching(chosen.name, shared)
        lesson = {"entry": self._entry, "compiler": self._spec, "tools": self._call}[chosen.name]
        found = await self._catalog(tenant_id) if chosen.name == "entry" else None
        for task in tasks:
            text = str(task.get("input") or task.get("description"))
            try:
                kind, example = await lesson(tenant_id, task, found)
                if await self._memory.known(tenant_id, kind, text, example):
                    teaching.already += 1  # checked when it was taught; the services' reads are spared
                    continue
                if found is not None:
                    await self._verify_plan(tenant_id, task, found, example)
            except (NoReference, PlanError, ValueError) as exc:
                teaching.refusals.append(f"{task['id']}: {exc}")
                continue
            source = f"suite:{chosen.name}"
            await self._memory.remember(tenant_id, kind, text, example, "success", source, shared=shared)
            teaching.taught += 1
        teaching.seconds = time.perf_counter() - began
        return teaching

    async def _entry(
        self, _tenant_id: int, task: dict[str, Any], found: Catalog | None
    ) -> tuple[ExperienceKind, dict[str, Any]]:
        """The teacher's plan for the task, checked like any plan (not run yet)."""
        assert found is not None
        plan = task_reference(task, found)
        return "plan", plan.model_dump(mode="json", by_alias=True, exclude_defaults=True)

    async def _verify_plan(
        self, tenant_id: int, task: dict[str, Any], found: Catalog, example: dict[str, Any]
    ) -> None:
        """The entry's verifier on the plan's reading against the live services; ValueError if refused."""
        plan = validated(example, found)
        caller = Caller(f"teach-{task['id']}", tenant_id)
        try:
            purchases = (await read(plan, found, caller)).purchases
            refusal = None
        except PlanError as exc:
            if not must_buy_nothing(task):
                raise
            purchases, refusal = [], str(exc)
        available = await available_cents(found, caller, str(task["user"])) if purchases else None
        verdict = entry_verdict(task, purchases, refusal, available)
        if not verdict.passed:
            raise ValueError(f"the verifier refused the reference plan: {verdict.reason}")

    async def _spec(
        self, tenant_id: int, task: dict[str, Any], _found: Catalog | None
    ) -> tuple[ExperienceKind, dict[str, Any]]:
        if task.get("error"):
            raise NoReference("a description that should make no agent has no spec to learn")
        tools = [str(t) for t in task.get("tools") or []]
        unknown = set(tools) - self._tool_names(tenant_id)
        if unknown:
            raise ValueError(f"grants tools the tenant cannot: {sorted(unknown)}")
        trigger = task.get("trigger")
        name = "-".join(w for w in str(task["description"]).lower().split()[:3] if w.isalpha()) or "agent"
        fields = {
            "name": name,
            "description": task["description"],
            "instructions": task["description"],
            "tools": tools,
            "triggers": [] if trigger is None else [_with_zone(trigger, task)],
        }
        AgentSpec.model_validate(fields)  # the verifier: a spec that validates
        return "spec", {"tools": tools, "trigger": trigger, "name": name, "instructions": task["description"]}

    async def _call(
        self, _tenant_id: int, task: dict[str, Any], _found: Catalog | None
    ) -> tuple[ExperienceKind, dict[str, Any]]:
        expect = task["expect"]
        schemas = {t.name: t.parameters for t in catalog_tools()}
        if expect["name"] not in schemas:
            raise ValueError(f"no tool {expect['name']}")
        problem = arguments_problem(expect.get("arguments") or {}, schemas[expect["name"]])
        if problem is not None:
            raise ValueError(f"the expected call does not validate: {problem}")
        return "call", {"name": expect["name"], "arguments": expect.get("arguments") or {}}
