"""Eval runs and their per-task results; blocking calls."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.schema import EvalResultRow, EvalRunRow


@dataclass(frozen=True, slots=True)
class EvalResult:
    """What the verifier said of one task."""

    task_id: str
    passed: bool
    checks: dict[str, bool]  # metric -> passed, for each metric the task counts in
    reason: str
    seconds: float
    answer: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The result as the API shows it."""
        return {
            "task": self.task_id,
            "passed": self.passed,
            "checks": self.checks,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "answer": self.answer,
        }


@dataclass(frozen=True, slots=True)
class EvalRun:
    """One run of a suite's split against a model."""

    id: str
    tenant_id: int
    suite: str
    split: str
    model: str
    experience: bool
    state: str
    total: int
    done: int
    metrics: dict[str, list[int]]  # metric -> [passed, counted]
    error: str | None
    started_at_us: int
    ended_at_us: int | None
    best_of: int = 1


def _run(row: EvalRunRow) -> EvalRun:
    return EvalRun(
        row.id,
        row.tenant_id,
        row.suite,
        row.split,
        row.model,
        row.experience,
        row.state,
        row.total,
        row.done,
        dict(orjson.loads(row.metrics)),
        row.error,
        row.started_at_us,
        row.ended_at_us,
        row.best_of,
    )


class EvalStore:
    """Creates runs, adds their results and reads them back."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(
        self,
        tenant_id: int,
        suite: str,
        split: str,
        model: str,
        experience: bool,
        total: int,
        best_of: int = 1,
    ) -> EvalRun:
        """A new run in ``running``."""
        row = EvalRunRow(
            id=f"evr-{secrets.token_hex(6)}",
            tenant_id=tenant_id,
            suite=suite,
            split=split,
            model=model,
            experience=experience,
            best_of=best_of,
            state="running",
            total=total,
            done=0,
            metrics="{}",
            started_at_us=now_us(),
        )
        with Session(self._engine) as session, session.begin():
            session.add(row)
            session.flush()
            return _run(row)

    def add(self, run_id: str, result: EvalResult, metrics: dict[str, list[int]]) -> None:
        """Keep one task's result and the run's figures so far, in one commit."""
        with Session(self._engine) as session, session.begin():
            session.add(
                EvalResultRow(
                    run_id=run_id,
                    task_id=result.task_id,
                    passed=result.passed,
                    checks=orjson.dumps(result.checks).decode(),
                    reason=result.reason[:4000],
                    seconds=result.seconds,
                    answer=None if result.answer is None else result.answer[:4000],
                )
            )
            session.execute(
                update(EvalRunRow)
                .where(EvalRunRow.id == run_id)
                .values(done=EvalRunRow.done + 1, metrics=orjson.dumps(metrics).decode())
            )

    def finish(self, run_id: str, state: str, error: str | None = None) -> None:
        """End a run: ``done``, or ``failed`` with why."""
        with Session(self._engine) as session, session.begin():
            session.execute(
                update(EvalRunRow)
                .where(EvalRunRow.id == run_id, EvalRunRow.state == "running")
                .values(state=state, error=None if error is None else error[:1000], ended_at_us=now_us())
            )

    def fail_running(self) -> int:
        """Runs a stopped server left running end as failed; how many."""
        with Session(self._engine) as session, session.begin():
            result = session.execute(
                update(EvalRunRow)
                .where(EvalRunRow.state == "running")
                .values(state="failed", error="the server stopped during the run", ended_at_us=now_us())
            )
        return int(getattr(result, "rowcount", 0) or 0)

    def get(self, run_id: str, tenant_id: int | None) -> EvalRun:
        """The run, if the tenant owns it (any tenant's for None); 404 otherwise."""
        with Session(self._engine) as session:
            row = session.get(EvalRunRow, run_id)
            if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
                raise AccountError(404, f"No eval run '{run_id}'.")
            return _run(row)

    def results(self, run_id: str) -> list[EvalResult]:
        """The run's results, in the order they were made."""
        query = select(EvalResultRow).where(EvalResultRow.run_id == run_id).order_by(EvalResultRow.id)
        with Session(self._engine) as session:
            return [
                EvalResult(r.task_id, r.passed, dict(orjson.loads(r.checks)), r.reason, r.seconds, r.answer)
                for r in session.scalars(query)
            ]

    def recent(self, tenant_id: int | None, suite: str | None = None, limit: int = 50) -> list[EvalRun]:
        """Runs, newest first; of one tenant (all for None) and suite if asked."""
        query = select(EvalRunRow)
        if tenant_id is not None:
            query = query.where(EvalRunRow.tenant_id == tenant_id)
        if suite is not None:
            query = query.where(EvalRunRow.suite == suite)
        query = query.order_by(EvalRunRow.started_at_us.desc()).limit(limit)
        with Session(self._engine) as session:
            return [_run(r) for r in session.scalars(query)]
