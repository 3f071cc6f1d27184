"""Training sets, learned model versions and which model is in use for each task kind; blocking calls."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.schema import DatasetRow, LearnedModelRow, PromotionRow

TaskKind = Literal["planner", "compiler", "agents"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)
ModelState = Literal["training", "failed", "candidate", "promoted", "kept", "retired"]
MODEL_STATES: tuple[str, ...] = get_args(ModelState)
_MAX_ERROR = 1000


@dataclass(frozen=True, slots=True)
class Dataset:
    """A training set: how many examples, where they came from, what was left out and why."""

    id: str
    kind: str
    examples: int
    sources: dict[str, int]
    left_out: dict[str, int]
    sha256: str
    path: str
    created_at_us: int

    def to_json(self) -> dict[str, Any]:
        """The dataset as the API shows it."""
        return {
            "id": self.id,
            "object": "dataset",
            "kind": self.kind,
            "examples": self.examples,
            "sources": self.sources,
            "left_out": self.left_out,
            "sha256": self.sha256,
            "created_at": self.created_at_us // 1_000_000,
        }


@dataclass(frozen=True, slots=True)
class LearnedModel:
    """A learned version of a model and its lineage (base, dataset, rounds, training, evals)."""

    id: int
    name: str
    kind: str
    base: str
    dataset_id: str | None
    state: str
    folder: str
    adapter_path: str | None
    lineage: dict[str, Any]
    error: str | None
    created_at_us: int
    updated_at_us: int

    def to_json(self) -> dict[str, Any]:
        """The version as the API shows it."""
        return {
            "id": self.name,
            "object": "learned_model",
            "kind": self.kind,
            "base": self.base,
            "dataset": self.dataset_id,
            "state": self.state,
            "adapter": self.adapter_path,
            "lineage": self.lineage,
            "error": self.error,
            "created_at": self.created_at_us // 1_000_000,
            "updated_at": self.updated_at_us // 1_000_000,
        }


@dataclass(frozen=True, slots=True)
class Promotion:
    """One change of the model in use for a task kind."""

    id: int
    kind: str
    model: str | None
    action: str
    reason: str
    at_us: int

    def to_json(self) -> dict[str, Any]:
        """The change as the API shows it."""
        return {
            "kind": self.kind,
            "model": self.model,
            "action": self.action,
            "reason": self.reason,
            "at": self.at_us // 1_000_000,
        }


def _dataset(row: DatasetRow) -> Dataset:
    return Dataset(
        row.id,
        row.kind,
        row.examples,
        dict(orjson.loads(row.sources)),
        dict(orjson.loads(row.left_out)),
        row.sha256,
        row.path,
        row.created_at_us,
    )


def _model(row: LearnedModelRow) -> LearnedModel:
    return LearnedModel(
        row.id,
        row.name,
        row.kind,
        row.base,
        row.dataset_id,
        row.state,
        row.folder,
        row.adapter_path,
        dict(orjson.loads(row.lineage)),
        row.error,
        row.created_at_us,
        row.updated_at_us,
    )


def _promotion(row: PromotionRow) -> Promotion:
    return Promotion(row.id, row.kind, row.model, row.action, row.reason, row.at_us)


class LearnedStore:
    """Keeps datasets, learned versions and promotions."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- datasets -------------------------------------------------------------------------------------

    def add_dataset(
        self,
        kind: str,
        examples: int,
        sources: dict[str, int],
        left_out: dict[str, int],
        sha256: str,
        path: str,
        dataset_id: str | None = None,
    ) -> Dataset:
        """Record a dataset whose file is written."""
        row = DatasetRow(
            id=dataset_id or new_dataset_id(),
            kind=kind,
            examples=examples,
            sources=orjson.dumps(sources).decode(),
            left_out=orjson.dumps(left_out).decode(),
            sha256=sha256,
            path=path,
            created_at_us=now_us(),
        )
        with Session(self._engine) as session, session.begin():
            session.add(row)
            session.flush()
            return _dataset(row)

    def dataset(self, dataset_id: str) -> Dataset:
        """A dataset by id; a 404 if there is none."""
        with Session(self._engine) as session:
            row = session.get(DatasetRow, dataset_id)
            if row is None:
                raise AccountError(404, f"No dataset '{dataset_id}'.")
            return _dataset(row)

    def datasets(self, kind: str | None = None, limit: int = 50) -> list[Dataset]:
        """Datasets, newest first."""
        query = select(DatasetRow).order_by(DatasetRow.created_at_us.desc()).limit(limit)
        if kind is not None:
            query = query.where(DatasetRow.kind == kind)
        with Session(self._engine) as session:
            return [_dataset(r) for r in session.scalars(query)]

    # -- learned versions -----------------------------------------------------------------------------

    def next_number(self, kind: str) -> int:
        """The number the next version of ``kind`` gets (one more than any so far)."""
        with Session(self._engine) as session:
            count = session.scalar(select(func.count()).where(LearnedModelRow.kind == kind))
            return int(count or 0) + 1

    def create_model(
        self, name: str, kind: str, base: str, dataset_id: str | None, folder: str, lineage: dict[str, Any]
    ) -> LearnedModel:
        """A new version in ``training``; a 409 if the name is taken."""
        at = now_us()
        with Session(self._engine) as session, session.begin():
            if session.scalar(select(LearnedModelRow.id).where(LearnedModelRow.name == name)) is not None:
                raise AccountError(409, f"A learned model named '{name}' exists already.")
            row = LearnedModelRow(
                name=name,
                kind=kind,
                base=base,
                dataset_id=dataset_id,
                state="training",
                folder=folder,
                lineage=orjson.dumps(lineage).decode(),
                created_at_us=at,
                updated_at_us=at,
            )
            session.add(row)
            session.flush()
            return _model(row)

    def update_model(
        self,
        name: str,
        *,
        state: str | None = None,
        adapter_path: str | None = None,
        lineage: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> LearnedModel:
        """Change a version's state, adapter, lineage or error."""
        with Session(self._engine) as session, session.begin():
            row = session.scalar(select(LearnedModelRow).where(LearnedModelRow.name == name))
            if row is None:
                raise AccountError(404, f"No learned model '{name}'.")
            if state is not None:
                row.state = state
            if adapter_path is not None:
                row.adapter_path = adapter_path
            if lineage is not None:
                row.lineage = orjson.dumps(lineage).decode()
            row.error = None if error is None else error[:_MAX_ERROR]
            row.updated_at_us = now_us()
            session.flush()
            return _model(row)

    def model(self, name: str) -> LearnedModel:
        """A version by name; a 404 if there is none."""
        with Session(self._engine) as session:
            row = session.scalar(select(LearnedModelRow).where(LearnedModelRow.name == name))
            if row is None:
                raise AccountError(404, f"No learned model '{name}'.")
            return _model(row)

    def models(self, kind: str | None = None) -> list[LearnedModel]:
        """Every version, newest first."""
        query = select(LearnedModelRow).order_by(LearnedModelRow.id.desc())
        if kind is not None:
            query = query.where(LearnedModelRow.kind == kind)
        with Session(self._engine) as session:
            return [_model(r) for r in session.scalars(query)]

    def fail_training(self) -> int:
        """Versions a stopped server left training end as failed (resumable); how many."""
        with Session(self._engine) as session, session.begin():
            result = session.execute(
                update(LearnedModelRow)
                .where(LearnedModelRow.state == "training")
                .values(
                    state="failed",
                    error="the server stopped while it trained; resume it to go on from its checkpoint",
                    updated_at_us=now_us(),
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    # -- promotions -----------------------------------------------------------------------------------

    def promote(self, kind: str, model: str | None, action: str, reason: str) -> Promotion:
        """Put ``model`` (None: the configured one) in use for ``kind``."""
        row = PromotionRow(kind=kind, model=model, action=action, reason=reason[:_MAX_ERROR], at_us=now_us())
        with Session(self._engine) as session, session.begin():
            session.add(row)
            session.flush()
            return _promotion(row)

    def history(self, kind: str | None = None, limit: int = 100) -> list[Promotion]:
        """Changes of the model in use, newest first."""
        query = select(PromotionRow).order_by(PromotionRow.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(PromotionRow.kind == kind)
        with Session(self._engine) as session:
            return [_promotion(r) for r in session.scalars(query)]

    def in_use(self) -> dict[str, str | None]:
        """Each kind's model in use by promotion (None where the configured one is)."""
        found: dict[str, str | None] = {}
        for change in reversed(self.history(limit=10_000)):
            found[change.kind] = change.model
        return found


def new_dataset_id() -> str:
    """A fresh dataset id."""
    return f"ds-{secrets.token_hex(6)}"
