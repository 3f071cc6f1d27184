"""The experience memory's rows: judged examples per tenant, found by meaning or by words; blocking calls.

An example is a sentence and what was done for it (a plan, a spec's parts), judged ``success`` or
``failure`` with the reason. The same example is kept once (a digest of kind, text and example).
Each tenant keeps at most ``MAX_EXAMPLES`` of a kind: past that, the oldest never shown go first,
then the least recently used.
An example may be ``shared``: a suite's training example the admin taught the whole grid, shown
to every tenant and changed by the admin alone; a tenant's own examples are only its own.
Embeddings are float32 vectors of unit length, kept as bytes beside the row; words are found with
SQLite's FTS5 (bm25) or PostgreSQL's text search (ts_rank), any word matching.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson
from sqlalchemy import ColumnElement, Engine, delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.schema import ExperienceRow

ExperienceKind = Literal["plan", "spec", "call"]
EXPERIENCE_KINDS: tuple[str, ...] = get_args(ExperienceKind)
Judgement = Literal["success", "failure"]
MAX_EXAMPLES = 5000
_WORD = re.compile(r"\w+", re.UNICODE)
_MAX_TERMS = 32


@dataclass(frozen=True, slots=True)
class ExampleRecord:
    """One judged example."""

    id: int
    tenant_id: int
    kind: str
    text: str
    example: dict[str, Any]
    outcome: str
    reason: str | None
    source: str
    shared: bool
    embedding: bytes | None
    embedding_model: str | None
    uses: int
    created_at_us: int
    last_used_at_us: int | None

    def to_json(self) -> dict[str, Any]:
        """The example as the API shows it (without its vector)."""
        return {
            "id": self.id,
            "object": "experience",
            "kind": self.kind,
            "text": self.text,
            "example": self.example,
            "outcome": self.outcome,
            "reason": self.reason,
            "source": self.source,
            "shared": self.shared,
            "embedded": self.embedding is not None,
            "uses": self.uses,
            "created_at": self.created_at_us // 1_000_000,
            "last_used_at": None if self.last_used_at_us is None else self.last_used_at_us // 1_000_000,
        }


def _record(row: ExperienceRow) -> ExampleRecord:
    return ExampleRecord(
        row.id,
        row.tenant_id,
        row.kind,
        row.text,
        dict(orjson.loads(row.example)),
        row.outcome,
        row.reason,
        row.source,
        row.shared,
        row.embedding,
        row.embedding_model,
        row.uses,
        row.created_at_us,
        row.last_used_at_us,
    )


def example_digest(kind: str, sentence: str, example: dict[str, Any]) -> str:
    """What makes two examples the same: kind, the sentence's words, the example."""
    words = " ".join(_WORD.findall(sentence.lower()))
    body = orjson.dumps(example, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(kind.encode() + b"\0" + words.encode() + b"\0" + body).hexdigest()


class ExperienceStore:
    """Adds, finds, lists and forgets a tenant's examples."""

    def __init__(self, engine: Engine, max_examples: int = MAX_EXAMPLES) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._max = max_examples

    def add(
        self,
        tenant_id: int,
        kind: ExperienceKind,
        sentence: str,
        example: dict[str, Any],
        outcome: Judgement,
        source: str,
        *,
        reason: str | None = None,
        embedding: bytes | None = None,
        embedding_model: str | None = None,
        shared: bool = False,
    ) -> tuple[ExampleRecord, bool]:
        """Keep an example; (the record, whether it is new). An example kept before is returned as it is."""
        digest = example_digest(kind, sentence, example)
        with Session(self._engine) as session, session.begin():
            row = session.scalar(
                select(ExperienceRow).where(
                    ExperienceRow.tenant_id == tenant_id,
                    ExperienceRow.kind == kind,
                    ExperienceRow.digest == digest,
                )
            )
            if row is not None:
                return _record(row), False
            row = ExperienceRow(
                tenant_id=tenant_id,
                kind=kind,
                text=sentence,
                example=orjson.dumps(example).decode(),
                outcome=outcome,
                reason=None if reason is None else reason[:1000],
                source=source[:96],
                shared=shared,
                digest=digest,
                embedding=embedding,
                embedding_model=embedding_model,
                uses=0,
                created_at_us=now_us(),
            )
            session.add(row)
            session.flush()
            kept = _record(row)
            self._trim(session, tenant_id, kind)
            return kept, True

    def holds(self, tenant_id: int, kind: str, digest: str) -> bool:
        """Whether the tenant keeps the example with this digest."""
        mine = (
            ExperienceRow.tenant_id == tenant_id,
            ExperienceRow.kind == kind,
            ExperienceRow.digest == digest,
        )
        with Session(self._engine) as session:
            return session.scalar(select(ExperienceRow.id).where(*mine)) is not None

    def _trim(self, session: Session, tenant_id: int, kind: str) -> None:
        """Past the bound, forget first the oldest examples never shown, then the least recently used."""
        mine = (ExperienceRow.tenant_id == tenant_id, ExperienceRow.kind == kind)
        count = session.scalar(select(func.count()).select_from(ExperienceRow).where(*mine)) or 0
        if count <= self._max:
            return
        last = func.coalesce(ExperienceRow.last_used_at_us, ExperienceRow.created_at_us)
        order = (ExperienceRow.uses > 0, last, ExperienceRow.id)
        victims = select(ExperienceRow.id).where(*mine).order_by(*order).limit(count - self._max)
        session.execute(delete(ExperienceRow).where(ExperienceRow.id.in_(list(session.scalars(victims)))))

    def all(self, tenant_id: int, kind: str, outcome: str = "success") -> list[ExampleRecord]:
        """Every example of a kind and outcome a tenant is shown, oldest first (for the vector index)."""
        query = (
            select(ExperienceRow)
            .where(_shown_to(tenant_id), ExperienceRow.kind == kind)
            .where(ExperienceRow.outcome == outcome)
            .order_by(ExperienceRow.id)
        )
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query)]

    def search(self, tenant_id: int, kind: str, query: str, limit: int = 10) -> list[int]:
        """The ids of the successful examples whose sentences best match any word of ``query``."""
        terms = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:_MAX_TERMS]
        if not terms:
            return []
        where = "(e.tenant_id = :tenant OR e.shared) AND e.kind = :kind AND e.outcome = 'success'"
        if self._postgres:
            sql = (
                "SELECT e.id FROM experience e, to_tsquery('english', :q) q "
                f"WHERE e.search @@ q AND {where} ORDER BY ts_rank(e.search, q) DESC, e.id DESC LIMIT :n"
            )
            match = " | ".join(terms)
        else:
            sql = (
                "SELECT e.id FROM experience_fts f JOIN experience e ON e.id = f.rowid "
                f"WHERE experience_fts MATCH :q AND {where} ORDER BY bm25(experience_fts), e.id DESC LIMIT :n"
            )
            match = " OR ".join(f'"{t}"' for t in terms)
        with Session(self._engine) as session:
            params = {"q": match, "tenant": tenant_id, "kind": kind, "n": limit}
            return [int(r[0]) for r in session.execute(text(sql), params)]

    def used(self, ids: list[int]) -> None:
        """Count a use of each example (the bound forgets the least recently used first)."""
        if not ids:
            return
        with Session(self._engine) as session, session.begin():
            session.execute(
                update(ExperienceRow)
                .where(ExperienceRow.id.in_(ids))
                .values(uses=ExperienceRow.uses + 1, last_used_at_us=now_us())
            )

    def recent(
        self,
        tenant_id: int | None,
        kind: str | None = None,
        outcome: str | None = None,
        limit: int = 50,
    ) -> list[ExampleRecord]:
        """Examples, newest first; those a tenant is shown (all for None), of a kind and outcome if asked."""
        query = select(ExperienceRow)
        if tenant_id is not None:
            query = query.where(_shown_to(tenant_id))
        if kind is not None:
            query = query.where(ExperienceRow.kind == kind)
        if outcome is not None:
            query = query.where(ExperienceRow.outcome == outcome)
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query.order_by(ExperienceRow.id.desc()).limit(limit))]

    def count(self, tenant_id: int | None) -> dict[str, dict[str, int]]:
        """How many examples a tenant is shown (all for None), by kind and outcome."""
        query = select(ExperienceRow.kind, ExperienceRow.outcome, func.count()).group_by(
            ExperienceRow.kind, ExperienceRow.outcome
        )
        if tenant_id is not None:
            query = query.where(_shown_to(tenant_id))
        counted: dict[str, dict[str, int]] = {}
        with Session(self._engine) as session:
            for kind, outcome, n in session.execute(query):
                counted.setdefault(kind, {})[outcome] = int(n)
        return counted

    def rejudge(self, tenant_id: int, source: str, outcome: Judgement, reason: str | None) -> list[int]:
        """Judge again every example that came from ``source`` (an entry, an agent version); their ids."""
        mine = (ExperienceRow.tenant_id == tenant_id, ExperienceRow.source == source)
        with Session(self._engine) as session, session.begin():
            ids = list(session.scalars(select(ExperienceRow.id).where(*mine)))
            if ids:
                values = {"outcome": outcome, "reason": None if reason is None else reason[:1000]}
                session.execute(update(ExperienceRow).where(ExperienceRow.id.in_(ids)).values(**values))
        return ids

    def get(self, example_id: int, tenant_id: int | None, shared: bool = True) -> ExampleRecord:
        """The example if the tenant is shown it (owns it, without ``shared``; any for None); else 404."""
        with Session(self._engine) as session:
            row = session.get(ExperienceRow, example_id)
            visible = row is not None and (
                tenant_id is None or row.tenant_id == tenant_id or (shared and row.shared)
            )
            if row is None or not visible:
                raise AccountError(404, f"No example {example_id} in the experience memory.")
            return _record(row)

    def forget(self, example_id: int, tenant_id: int | None) -> ExampleRecord:
        """Delete an example; 404 if the tenant owns none of that id (shared ones are the admin's)."""
        found = self.get(example_id, tenant_id, shared=False)
        with Session(self._engine) as session, session.begin():
            session.execute(delete(ExperienceRow).where(ExperienceRow.id == example_id))
        return found


def _shown_to(tenant_id: int) -> ColumnElement[bool]:
    """A tenant's own examples and the shared ones."""
    return or_(ExperienceRow.tenant_id == tenant_id, ExperienceRow.shared)
