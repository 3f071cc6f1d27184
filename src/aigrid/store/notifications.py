"""Messages agents leave for their owners, one inbox per tenant; blocking calls."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from aigrid.grid.limits import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.schema import Notification

MAX_NOTIFICATION_CHARS = 4000


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """A message for a tenant's owner: from which process and agent, when."""

    id: int
    tenant_id: int
    pid: str | None
    agent: str | None
    text: str
    created_at_us: int


class NotificationStore:
    """Keeps and lists owners' notifications."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, tenant_id: int, body: str, pid: str | None = None, agent: str | None = None) -> int:
        """Leave a message for the tenant's owner; its id."""
        if not body.strip():
            raise AccountError(400, "A notification needs some text.")
        row = Notification(
            tenant_id=tenant_id,
            pid=pid,
            agent=agent,
            text=body[:MAX_NOTIFICATION_CHARS],
            created_at_us=now_us(),
        )
        with Session(self._engine) as session, session.begin():
            session.add(row)
            session.flush()
            return row.id

    def inbox(self, tenant_id: int | None, after: int = 0, limit: int = 100) -> list[NotificationRecord]:
        """Notifications after id ``after``, oldest first; of one tenant, or all for None."""
        query = select(Notification).where(Notification.id > after)
        if tenant_id is not None:
            query = query.where(Notification.tenant_id == tenant_id)
        with Session(self._engine) as session:
            return [
                NotificationRecord(r.id, r.tenant_id, r.pid, r.agent, r.text, r.created_at_us)
                for r in session.scalars(query.order_by(Notification.id).limit(limit))
            ]
