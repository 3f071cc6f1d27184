"""Held-out evals as a feature: a suite's split run against a model, stored, compared with intervals.

A run goes on as a task of the server, one task of the suite at a time (the embedded model is one
engine; parallel plans only queue), each task's result stored as it is judged, so a run can be
watched while it goes and read back after. A run a stopped server left running is marked failed
at the next start. Rates come with 95% Wilson score intervals; two runs' rates differ beyond the
noise when their intervals do not overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from typing import Any

from aigrid.errors import APIError
from aigrid.learn.judges import Judge
from aigrid.learn.suites import SPLITS, Split, SuiteError, suite
from aigrid.store.db import StoreCalls
from aigrid.store.evals import EvalResult, EvalRun, EvalStore

log = logging.getLogger(__name__)
_Z95 = 1.959963984540054
MAX_LIMIT = 100_000
MAX_BEST_OF = 16


def wilson(passed: int, total: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a pass rate (0 to 1 when nothing was counted)."""
    if total <= 0:
        return 0.0, 1.0
    p = passed / total
    denominator = 1 + _Z95**2 / total
    centre = (p + _Z95**2 / (2 * total)) / denominator
    half = _Z95 * math.sqrt(p * (1 - p) / total + _Z95**2 / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def metric_json(passed: int, total: int) -> dict[str, Any]:
    """A metric as the API shows it: counts, rate and interval."""
    low, high = wilson(passed, total)
    return {
        "passed": passed,
        "total": total,
        "rate": None if total == 0 else round(passed / total, 4),
        "low": round(low, 4),
        "high": round(high, 4),
    }


def run_json(run: EvalRun, results: list[EvalResult] | None = None) -> dict[str, Any]:
    """A run as the API shows it (with its results when given)."""
    shown: dict[str, Any] = {
        "id": run.id,
        "object": "eval_run",
        "suite": run.suite,
        "split": run.split,
        "model": run.model,
        "experience": run.experience,
        "best_of": run.best_of,
        "state": run.state,
        "total": run.total,
        "done": run.done,
        "metrics": {name: metric_json(p, t) for name, (p, t) in run.metrics.items()},
        "error": run.error,
        "started_at": run.started_at_us // 1_000_000,
        "ended_at": None if run.ended_at_us is None else run.ended_at_us // 1_000_000,
    }
    if results is not None:
        shown["results"] = [r.to_json() for r in results]
    return shown


def comparison(
    a: EvalRun, b: EvalRun, a_results: list[EvalResult], b_results: list[EvalResult]
) -> dict[str, Any]:
    """Two runs side by side: each metric's rates, the difference, and the tasks judged differently."""
    metrics = []
    for name in dict.fromkeys([*a.metrics, *b.metrics]):
        ma = metric_json(*a.metrics.get(name, [0, 0]))
        mb = metric_json(*b.metrics.get(name, [0, 0]))
        difference = None if ma["rate"] is None or mb["rate"] is None else round(mb["rate"] - ma["rate"], 4)
        apart = ma["total"] > 0 and mb["total"] > 0 and (mb["low"] > ma["high"] or ma["low"] > mb["high"])
        metrics.append({"name": name, "a": ma, "b": mb, "difference": difference, "significant": apart})
    in_b = {r.task_id: r.passed for r in b_results}
    tasks = [
        {"task": r.task_id, "a": r.passed, "b": in_b[r.task_id]}
        for r in a_results
        if r.task_id in in_b and in_b[r.task_id] != r.passed
    ]
    return {
        "object": "eval_comparison",
        "a": run_json(a),
        "b": run_json(b),
        "metrics": metrics,
        "tasks": tasks,
    }


class EvalService:
    """Starts eval runs, carries them out as tasks of the server, and reads them back."""

    def __init__(
        self, store: EvalStore, calls: StoreCalls, judges: dict[str, Judge], models: Mapping[str, str]
    ) -> None:
        self.store = store
        self._calls = calls
        self._judges = judges
        self._models = models
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def recover(self) -> int:
        """Runs a stopped server left running are failed; how many."""
        return await self._calls(self.store.fail_running)

    async def start(
        self,
        tenant_id: int,
        suite_name: str,
        split: str = "heldout",
        model: str | None = None,
        experience: bool = True,
        limit: int | None = None,
        best_of: int = 1,
    ) -> EvalRun:
        """A new run of ``suite_name``'s ``split``, going on in the background."""
        chosen = suite(suite_name)
        if not 1 <= best_of <= MAX_BEST_OF:
            raise SuiteError(400, f"best_of must be between 1 and {MAX_BEST_OF}.")
        if best_of > 1 and chosen.name != "entry":
            raise SuiteError(400, "best_of draws several plans: only the entry suite has a plan checker.")
        if split not in SPLITS:
            raise SuiteError(400, f"Unknown split '{split}'; the splits are {', '.join(SPLITS)}.")
        if limit is not None and not 1 <= limit <= MAX_LIMIT:
            raise SuiteError(400, f"limit must be between 1 and {MAX_LIMIT}.")
        split_name: Split = SPLITS[SPLITS.index(split)]  # the Literal of the name checked above
        tasks = chosen.tasks(split_name)[:limit]
        judge = self._judges[chosen.name]
        used = model or self._models[chosen.name]
        run = await self._calls(
            self.store.create, tenant_id, chosen.name, split_name, used, experience, len(tasks), best_of
        )
        work = asyncio.get_running_loop().create_task(self._carry_out(run, tasks, judge))
        self._tasks[run.id] = work
        work.add_done_callback(lambda _: self._tasks.pop(run.id, None))
        return run

    async def wait(self, run_id: str, seconds: float) -> None:
        """Wait up to ``seconds`` for a run of this server to end."""
        work = self._tasks.get(run_id)
        if work is not None and seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(work), seconds)

    async def _carry_out(self, run: EvalRun, tasks: list[dict[str, Any]], judge: Judge) -> None:
        counts: dict[str, list[int]] = {}
        try:
            for task in tasks:
                judged = await judge(run.tenant_id, task, run.model, run.experience, run.best_of)
                for name, passed in judged.verdict.checks.items():
                    tally = counts.setdefault(name, [0, 0])
                    tally[0] += int(passed)
                    tally[1] += 1
                result = EvalResult(
                    str(task["id"]),
                    judged.verdict.passed,
                    judged.verdict.checks,
                    judged.verdict.reason,
                    judged.seconds,
                    judged.answer,
                )
                await self._calls(self.store.add, run.id, result, counts)
        except APIError as exc:  # the model is unknown, over budget or down: the run says so
            await self._calls(self.store.finish, run.id, "failed", f"the model failed: {exc.message}")
            return
        except asyncio.CancelledError:
            await self._calls(self.store.finish, run.id, "failed", "the server stopped during the run")
            raise
        except Exception as exc:
            log.exception("eval run %s failed", run.id)
            await self._calls(self.store.finish, run.id, "failed", f"{type(exc).__name__}: {exc}")
            return
        await self._calls(self.store.finish, run.id, "done")

    async def close(self) -> None:
        """Stop the runs going on; each is marked failed."""
        for work in list(self._tasks.values()):
            work.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
