"""The owner's inbox, one per tenant: notes agents leave and the results of unattended processes.

Blocking calls. A message whose agent names a webhook is also delivered there, tried again with
growing pauses until the webhook answers; the inbox keeps the message whatever happens to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, and_, exists, select, update
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.schema import InboxRow, ProcessRow

MAX_MESSAGE_CHARS = 4000
MAX_DELIVERY_ATTEMPTS = 8
InboxKind = Literal["note", "result"]


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """A message for a tenant's owner: from which process and agent, when, and its delivery."""

    id: int
    tenant_id: int
    pid: str | None
    agent: str | None
    kind: str
    text: str
    created_at_us: int
    webhook: str | None
    attempts: int
    delivered_at_us: int | None
    delivery_error: str | None


def _message(r: InboxRow) -> InboxMessage:
    return InboxMessage(
        r.id,
        r.tenant_id,
        r.pid,
        r.agent,
        r.kind,
        r.text,
        r.created_at_us,
        r.webhook,
        r.attempts,
        r.delivered_at_us,
        r.delivery_error,
    )


class InboxStore:
    """Keeps, lists and tracks the delivery of owners' messages."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def post(
        self,
        tenant_id: int,
        body: str,
        *,
        kind: InboxKind = "note",
        pid: str | None = None,
        agent: str | None = None,
        webhook: str | None = None,
    ) -> int:
        """Leave a message for the tenant's owner (and for ``webhook``, if given); its id."""
        if not body.strip():
            raise AccountError(400, "A message needs some text.")
        now = now_us()
        row = InboxRow(
            tenant_id=tenant_id,
            pid=pid,
            agent=agent,
            kind=kind,
            text=body[:MAX_MESSAGE_CHARS],
            created_at_us=now,
            webhook=webhook,
            attempts=0,
            next_try_at_us=now if webhook else None,
        )
        with Session(self._engine) as session, session.begin():
            session.add(row)
            session.flush()
            return row.id

    def messages(self, tenant_id: int | None, after: int = 0, limit: int = 100) -> list[InboxMessage]:
        """Messages after id ``after``, oldest first; of one tenant, or all for None."""
        query = select(InboxRow).where(InboxRow.id > after)
        if tenant_id is not None:
            query = query.where(InboxRow.tenant_id == tenant_id)
        with Session(self._engine) as session:
            return [_message(r) for r in session.scalars(query.order_by(InboxRow.id).limit(limit))]

    def due(self, now: int, limit: int = 100) -> list[InboxMessage]:
        """Messages whose webhook delivery is due: not delivered, not given up on, time to try."""
        query = (
            select(InboxRow)
            .where(InboxRow.next_try_at_us.is_not(None), InboxRow.next_try_at_us <= now)
            .order_by(InboxRow.next_try_at_us)
            .limit(limit)
        )
        with Session(self._engine) as session:
            return [_message(r) for r in session.scalars(query)]

    def delivered(self, message_id: int) -> None:
        """The webhook took the message."""
        values = {"delivered_at_us": now_us(), "next_try_at_us": None, "delivery_error": None}
        self._set(message_id, values, tried=True)

    def failed(self, message_id: int, error: str, retry_at_us: int | None) -> None:
        """The webhook did not take it: try again at ``retry_at_us``, or never (None)."""
        self._set(message_id, {"delivery_error": error[:512], "next_try_at_us": retry_at_us}, tried=True)

    def _set(self, message_id: int, values: Mapping[str, object], tried: bool) -> None:
        with Session(self._engine) as session, session.begin():
            session.execute(
                update(InboxRow)
                .where(InboxRow.id == message_id)
                .values(**values, attempts=InboxRow.attempts + (1 if tried else 0))
            )

    def unreported(self, origins: tuple[str, ...], since_us: int, limit: int = 500) -> list[str]:
        """Ended processes of these origins since ``since_us`` whose result is not in the inbox yet."""
        reported = exists().where(and_(InboxRow.pid == ProcessRow.pid, InboxRow.kind == "result"))
        query = (
            select(ProcessRow.pid)
            .where(
                ProcessRow.origin.in_(origins),
                ProcessRow.state.in_(["done", "failed", "killed"]),
                ProcessRow.updated_at_us >= since_us,
                ~reported,
            )
            .limit(limit)
        )
        with Session(self._engine) as session:
            return list(session.scalars(query))
