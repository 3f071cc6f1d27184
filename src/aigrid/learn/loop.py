"""The self-training loop: sample and verify, build a dataset, train, and let the gate decide.

A round, for a task kind:

1. the student (the model in use for the kind) answers each training task ``k`` times and the
   teacher once (``aigrid.learn.sampling``; the planner's kind only: the other kinds learn from
   their traces alone); the verifier keeps what is right, and the round's pass rate is recorded;
2. a dataset gathers those samples with the kind's verified traces and people's corrections,
   leaving held-out material out (``aigrid.learn.datasets``);
3. a new version is trained on it (``aigrid.learn.models``) and served as a candidate;
4. the gate runs it against the model in use on the held-out suite and promotes it only if it
   wins beyond the noise.

Rounds run one at a time, as tasks of the server. With ``[learn] schedule`` set (a cron
expression), the loop runs a round by itself at those times when at least ``min_new_traces``
verified traces of the kind came in since its last round: a trigger, as an agent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from aigrid.clock import now_us
from aigrid.config import LearnConfig
from aigrid.kernel.model import ModelRoles
from aigrid.learn.datasets import TRACE_KIND, DatasetBuilder, Example
from aigrid.learn.models import LearnedModels
from aigrid.learn.sampling import RoundFigures, Sampler, SamplingSettings
from aigrid.learn.suites import held_out, training
from aigrid.store.accounts import AccountError
from aigrid.store.db import StoreCalls
from aigrid.store.learned import LearnedModel
from aigrid.store.traces import TraceStore

log = logging.getLogger(__name__)
_FOREVER_S = 365 * 86400.0
_KEPT_ROUNDS = 100


@dataclass(frozen=True, slots=True)
class RoundSettings:
    """What one round does."""

    kind: str = "planner"
    tasks: int | None = None  # training tasks sampled (all when None)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    train: dict[str, Any] = field(default_factory=dict)  # TrainJob settings
    promote: bool = True
    gate_limit: int | None = None  # held-out tasks the gate runs (all when None)
    # Who answers the training tasks: the model in use for the kind when None, or a learned version
    # not yet promoted (the next round of STaR or ReST-EM samples from the last one trained). A
    # round whose student is a learned version trains on top of it, so rounds build on each other.
    student: str | None = None
    # The first training task sampled: after the student's own round's tasks when None, so that a
    # next round sees tasks the last one did not.
    start: int | None = None


@dataclass
class Round:
    """A round as it goes: where it stands and what it made."""

    id: str
    tenant_id: int
    settings: RoundSettings
    state: str = "sampling"  # sampling | training | gating | done | failed
    sampled: int = 0
    of: int = 0
    figures: RoundFigures | None = None
    dataset: str | None = None
    model: str | None = None
    decision: dict[str, Any] | None = None
    error: str | None = None
    started_at_us: int = field(default_factory=now_us)
    ended_at_us: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The round as the API shows it."""
        return {
            "id": self.id,
            "object": "learning_round",
            "kind": self.settings.kind,
            "state": self.state,
            "sampled": self.sampled,
            "tasks": self.of,
            "pass_rate": None if self.figures is None else self.figures.to_json()["pass_rate"],
            "dataset": self.dataset,
            "model": self.model,
            "decision": self.decision,
            "error": self.error,
            "started_at": self.started_at_us // 1_000_000,
            "ended_at": None if self.ended_at_us is None else self.ended_at_us // 1_000_000,
        }


class SelfTraining:
    """Runs rounds of the loop, on request or on a schedule."""

    def __init__(
        self,
        sampler: Sampler,
        datasets: DatasetBuilder,
        models: LearnedModels,
        roles: ModelRoles,
        traces: TraceStore,
        calls: StoreCalls,
    ) -> None:
        self._sampler = sampler
        self._datasets = datasets
        self._models = models
        self._roles = roles
        self._traces = traces
        self._calls = calls
        self.rounds: dict[str, Round] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}

    def start(self, tenant_id: int, settings: RoundSettings) -> Round:
        """Start a round in the background; it waits for the one before it to end."""
        if settings.kind not in TRACE_KIND:
            raise AccountError(400, f"'kind' must be one of: {', '.join(TRACE_KIND)}.")
        chosen = Round(f"round-{secrets.token_hex(5)}", tenant_id, settings)
        self.rounds[chosen.id] = chosen
        for old in list(self.rounds)[:-_KEPT_ROUNDS]:
            self.rounds.pop(old)
        task = asyncio.get_running_loop().create_task(self._run(chosen))
        self._tasks.add(task)
        self._running[chosen.id] = task
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._running.pop(chosen.id, None))
        return chosen

    async def wait(self, round_id: str, seconds: float) -> None:
        """Wait up to ``seconds`` for a round to end."""
        task = self._running.get(round_id)
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), seconds)

    async def close(self) -> None:
        """Stop the rounds going on."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, chosen: Round) -> None:
        async with self._lock:
            try:
                await self._round(chosen)
                chosen.state = "done"
            except (AccountError, ValueError, OSError, RuntimeError) as exc:
                chosen.state, chosen.error = "failed", str(exc)
                log.warning("learning round %s failed: %s", chosen.id, exc)
            finally:
                chosen.ended_at_us = now_us()

    async def _round(self, chosen: Round) -> None:
        settings = chosen.settings
        samples: list[Example] = []
        student = settings.student or self._roles.model(settings.kind)
        parent = await self._learned(student)
        window: dict[str, int] = {}
        if settings.kind == "planner" and (settings.sampling.k or settings.sampling.teacher):
            every = [t for t in training("entry") if not held_out(str(t["input"]))]
            start = settings.start if settings.start is not None else _after(parent)
            tasks = _window(every, start, settings.tasks)
            window = {"start": start % len(every), "count": len(tasks)}
            chosen.of = len(tasks)

            def seen(done: int, _total: int) -> None:
                chosen.sampled = done

            samples, chosen.figures = await self._sampler.round(
                chosen.tenant_id, tasks, student, settings.sampling, progress=seen
            )
        chosen.state = "training"
        dataset = await self._datasets.build(settings.kind, None, samples)
        chosen.dataset = dataset.id
        lineage = {
            "student": student,
            "tasks": window,
            "rounds": [] if chosen.figures is None else [chosen.figures.to_json()],
            "sampling": {
                "k": settings.sampling.k,
                "temperature": settings.sampling.temperature,
                "teacher": settings.sampling.teacher,
                "experience": settings.sampling.experience,
            },
        }
        model = await self._models.train(
            settings.kind, dataset.id, settings.train, lineage, None if parent is None else parent.name
        )
        chosen.model = model.name
        await self._models.wait(model.name, _FOREVER_S)
        trained = await self._calls(self._models.store.model, model.name)
        if trained.state != "candidate":
            raise RuntimeError(f"training {model.name} failed: {trained.error}")
        if settings.promote:
            chosen.state = "gating"
            chosen.decision = await self._models.promote(chosen.tenant_id, model.name, settings.gate_limit)

    async def _learned(self, name: str) -> LearnedModel | None:
        """The learned version called ``name``, or None for a model of the grid's own."""
        if "@" not in name:
            return None
        try:
            return await self._calls(self._models.store.model, name)
        except AccountError:
            return None

    def schedule(self, config: LearnConfig, tenant_id: int) -> None:
        """Run the planner's rounds on the config's schedule, if it has one, for ``tenant_id`` (the admin)."""
        if config.schedule is None:
            return
        task = asyncio.get_running_loop().create_task(
            self.scheduled(tenant_id, config.schedule, config.min_new_traces)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def scheduled(self, tenant_id: int, cron: str, min_new: int, kind: str = "planner") -> None:
        """Run a round at each time of ``cron`` when ``min_new`` verified traces came in since the last."""
        last_seen = await self._verified(kind)
        times = croniter(cron, datetime.now(UTC))
        while True:
            due = times.get_next(datetime)
            await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
            count = await self._verified(kind)
            if count - last_seen < min_new:
                continue
            last_seen = count
            chosen = self.start(tenant_id, RoundSettings(kind=kind))
            await self.wait(chosen.id, _FOREVER_S)

    async def _verified(self, kind: str) -> int:
        return await self._calls(self._traces.count, TRACE_KIND[kind], "success")


def _after(parent: LearnedModel | None) -> int:
    """Where the round after ``parent``'s starts: past the tasks its own round sampled."""
    window = {} if parent is None else parent.lineage.get("tasks") or {}
    return int(window.get("start", 0)) + int(window.get("count", 0))


def _window(tasks: list[dict[str, Any]], start: int, count: int | None) -> list[dict[str, Any]]:
    """``count`` tasks from ``start`` on, going round to the first ones past the end (all when None)."""
    if not tasks:
        return []
    start %= len(tasks)
    wanted = len(tasks) if count is None else min(count, len(tasks))
    return [tasks[(start + i) % len(tasks)] for i in range(wanted)]
