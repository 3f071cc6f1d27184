"""Self-training rounds: many answers per training task, kept only where the verifier accepts them.

For each training task of the entry suite the student is asked ``k`` times at a temperature, with
the very prompt the planner would use (the experience memory's examples included when it is on);
the ``k`` requests go to the grid together, so the embedded engine decodes them as one batch.
A teacher may answer too: ``"code"`` is the reference planner that writes plans from the task's
structured rule (``aigrid.learn.teacher``), any other name a stronger model on the grid. Each
distinct answer is checked as a plan and judged by the entry's verifier against the live services
(buying nothing); the accepted ones become examples in their canonical written form, and the round
records its pass rate per source, the figure that shows whether the loop gets anywhere (STaR and
ReST-EM keep exactly these).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson

from aigrid.entry.calls import Caller
from aigrid.entry.catalog import Catalog
from aigrid.entry.plan import PlanError
from aigrid.entry.planner import (
    PlanExample,
    Planner,
    Prompted,
    Recall,
    WriteFn,
    canonical,
    checked_written,
)
from aigrid.learn.datasets import Example
from aigrid.learn.judges import ENTRY_TODAY, plan_verdict
from aigrid.learn.suites import normalised
from aigrid.learn.teacher import NoReference, task_reference

CODE_TEACHER = "code"
# A sampled plan is as long as an evaluated one.
_SAMPLE_TEMPERATURE_MAX = 2.0


@dataclass
class RoundFigures:
    """What one round of sampling found: tasks, answers, and how many the verifier kept, by source."""

    round: int
    tasks: int = 0
    by_source: dict[str, list[int]] = field(default_factory=dict)  # source -> [passed, tried]
    solved: int = 0  # tasks with at least one accepted answer
    seconds: float = 0.0

    def count(self, source: str, passed: bool) -> None:
        """Count one judged answer."""
        tally = self.by_source.setdefault(source, [0, 0])
        tally[0] += int(passed)
        tally[1] += 1

    def to_json(self) -> dict[str, Any]:
        """As a model's lineage keeps it."""
        return {
            "round": self.round,
            "tasks": self.tasks,
            "solved": self.solved,
            "pass_rate": {
                s: {"passed": p, "tried": t, "rate": round(p / t, 4) if t else None}
                for s, (p, t) in self.by_source.items()
            },
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True, slots=True)
class SamplingSettings:
    """How a round samples: answers per task, temperature, teacher, and whether the memory helps."""

    k: int = 4
    temperature: float = 0.8
    teacher: str | None = CODE_TEACHER
    experience: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.k <= 32:
            raise ValueError("k must be between 0 and 32")
        if not 0 < self.temperature <= _SAMPLE_TEMPERATURE_MAX:
            raise ValueError(f"temperature must be above 0 and at most {_SAMPLE_TEMPERATURE_MAX:g}")


class Sampler:
    """Samples and verifies answers for the planner's training tasks."""

    def __init__(
        self,
        catalog: Callable[[int], Awaitable[Catalog]],
        writer: Callable[[str, float], WriteFn],
        recall: Recall,
    ) -> None:
        self._catalog = catalog
        self._writer = writer
        self._recall = recall

    async def round(
        self,
        tenant_id: int,
        tasks: list[dict[str, Any]],
        student: str,
        settings: SamplingSettings,
        number: int = 1,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[Example], RoundFigures]:
        """One round over ``tasks``: the accepted examples and the round's figures."""
        began = time.perf_counter()
        found = await self._catalog(tenant_id)
        recall = _others(self._recall) if settings.experience else None
        planner = Planner(self._writer(student, settings.temperature), recall)
        figures = RoundFigures(number)
        kept: list[Example] = []
        for done, task in enumerate(tasks, 1):
            figures.tasks += 1
            try:
                asked = await planner.prepare(
                    tenant_id, str(task["user"]), str(task["input"]), found, ENTRY_TODAY
                )
            except PlanError:
                continue
            answers = await self._answers(tenant_id, task, asked, student, settings, found)
            accepted = await self._judge(tenant_id, task, asked, answers, found, figures)
            figures.solved += bool(accepted)
            kept += accepted
            if progress is not None:
                progress(done, len(tasks))
        figures.seconds = time.perf_counter() - began
        return kept, figures

    async def _answers(
        self,
        tenant_id: int,
        task: dict[str, Any],
        asked: Prompted,
        student: str,
        settings: SamplingSettings,
        found: Catalog,
    ) -> list[tuple[str, str]]:
        """(source, answer) pairs: the student's ``k`` and the teacher's one."""
        write = self._writer(student, settings.temperature)
        drawn = await asyncio.gather(
            *(write(tenant_id, asked.messages, asked.schema) for _ in range(settings.k)),
            return_exceptions=True,
        )
        answers = [("student", a) for a in drawn if isinstance(a, str)]
        if settings.teacher == CODE_TEACHER:
            reference = _reference(task, found)
            if reference is not None:
                answers.append(("teacher", reference))
        elif settings.teacher:
            try:
                answers.append(
                    (
                        "teacher",
                        await self._writer(settings.teacher, 0.0)(tenant_id, asked.messages, asked.schema),
                    )
                )
            except Exception as exc:  # a teacher that fails gives no example; the round goes on
                answers.append(("teacher", f"<no answer: {exc}>"))
        return answers

    async def _judge(
        self,
        tenant_id: int,
        task: dict[str, Any],
        asked: Prompted,
        answers: list[tuple[str, str]],
        found: Catalog,
        figures: RoundFigures,
    ) -> list[Example]:
        kept: list[Example] = []
        verdicts: dict[str, bool] = {}
        for source, answer in answers:
            try:
                plan = checked_written(answer, found, asked.shown)
            except PlanError:
                figures.count(source, False)
                continue
            written = canonical(plan)
            if written not in verdicts and not _writable(written, asked.schema):
                verdicts[written] = False  # the grammar could not write it: nothing to learn from
            if written not in verdicts:
                caller = Caller(f"sample-{task['id']}", tenant_id)
                verdicts[written] = (await plan_verdict(task, plan, None, found, caller)).passed
                if verdicts[written]:
                    kept.append(Example(asked.messages, written, source))
            figures.count(source, verdicts[written])
        return kept


def _others(recall: Recall) -> Recall:
    """The memory's examples for a training task but the task's own sentence: the memory holds the
    training split's verified plans, and a prompt whose nearest example is the very same request
    teaches only to copy it (a held-out request never meets itself there)."""

    async def others(tenant_id: int, text: str) -> list[PlanExample]:
        own = normalised(text)
        return [e for e in await recall(tenant_id, text) if normalised(e.text) != own]

    return others


def _writable(written: str, schema: dict[str, Any]) -> bool:
    """Whether the answer's grammar (its JSON schema) admits the written plan."""
    return jsonschema.Draft202012Validator(schema).is_valid(orjson.loads(written))


def _reference(task: dict[str, Any], found: Catalog) -> str | None:
    """The code teacher's plan for a task, written as the model writes one; None if it has none."""
    try:
        return canonical(task_reference(task, found))
    except (NoReference, PlanError, KeyError):
        return None
