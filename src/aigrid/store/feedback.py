"""People's feedback on what the system answered: a rating, a comment, a corrected answer; blocking calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.schema import FeedbackRow, LedgerEntry

FeedbackKind = Literal["completion", "process", "entry", "agent"]
FEEDBACK_KINDS: tuple[str, ...] = get_args(FeedbackKind)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One piece of feedback on one answer."""

    id: int
    tenant_id: int
    kind: str
    target: str
    rating: int
    comment: str | None
    correction: str | None
    created_at_us: int

    def to_json(self) -> dict[str, Any]:
        """The feedback as the API shows it."""
        return {
            "id": self.id,
            "object": "feedback",
            "kind": self.kind,
            "target": self.target,
            "rating": self.rating,
            "comment": self.comment,
            "correction": self.correction,
            "created_at": self.created_at_us // 1_000_000,
        }


def _record(row: FeedbackRow) -> FeedbackRecord:
    return FeedbackRecord(
        row.id,
        row.tenant_id,
        row.kind,
        row.target,
        row.rating,
        row.comment,
        row.correction,
        row.created_at_us,
    )


class FeedbackStore:
    """Keeps and lists feedback."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(
        self,
        tenant_id: int,
        kind: FeedbackKind,
        target: str,
        rating: int,
        comment: str | None = None,
        correction: str | None = None,
    ) -> FeedbackRecord:
        """Keep one piece of feedback (the target's ownership is the caller's to check)."""
        row = FeedbackRow(
            tenant_id=tenant_id,
            kind=kind,
            target=target,
            rating=rating,
            comment=comment,
            correction=correction,
            created_at_us=now_us(),
        )
        with Session(self._engine) as session, session.begin():
            session.add(row)
            session.flush()
            return _record(row)

    def recent(
        self, tenant_id: int | None, kind: str | None = None, target: str | None = None, limit: int = 50
    ) -> list[FeedbackRecord]:
        """Feedback, newest first; of one tenant (all for None), kind and target if asked."""
        query = select(FeedbackRow)
        if tenant_id is not None:
            query = query.where(FeedbackRow.tenant_id == tenant_id)
        if kind is not None:
            query = query.where(FeedbackRow.kind == kind)
        if target is not None:
            query = query.where(FeedbackRow.target == target)
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query.order_by(FeedbackRow.id.desc()).limit(limit))]


def request_owner(engine: Engine, request_id: str) -> int | None:
    """The tenant a metered request (its X-Request-Id) was for, if the ledger has it."""
    with Session(engine) as session:
        return session.scalar(select(LedgerEntry.tenant_id).where(LedgerEntry.id == request_id))
