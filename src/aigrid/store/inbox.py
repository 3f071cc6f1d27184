"""The owner's inbox, one per tenant: notes agents leave and the results of unattended processes.

Blocking calls. A message whose agent names a webhook is also delivered there, tried again with
growing pauses until the webhook answers; the inbox keeps the message whatever happens to it.

In a cluster a server first claims the deliveries it is about to try (``claim_due``): a delivery
is tried by one server at a time, and one whose claimer's lease ended is taken over. A process's
result is kept once (a unique key), however many servers sweep for unreported results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import ColumnElement, Engine, and_, exists, not_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.cluster import Owner, claim_rows, db_now_us, owner_is_live
from aigrid.store.schema import InboxRow, ProcessRow

MAX_MESSAGE_CHARS = 4000
MAX_DELIVERY_ATTEMPTS = 8
# How long a claim on a delivery holds while its server lives: well past one try (an HTTP timeout
# of 10 s), so a live server's claim that was never let go (its round failed) frees itself.
CLAIM_S = 60.0
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
    owner: Owner | None = None


def _claimed_by(owner: Owner) -> ColumnElement[bool]:
    return and_(InboxRow.owner_node_id == owner.node_id, InboxRow.owner_epoch == owner.epoch)


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
        None if r.owner_node_id is None else Owner(r.owner_node_id, r.owner_epoch or 0),
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
        """Leave a message for the tenant's owner (and for ``webhook``, if given); its id.

        A process's result is kept once: posting it again returns the id of the one kept.
        """
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
        try:
            with Session(self._engine) as session, session.begin():
                session.add(row)
                session.flush()
                return row.id
        except IntegrityError:
            if kind != "result" or pid is None:
                raise
        with Session(self._engine) as session:  # another server (or sweep) posted it first
            return session.scalars(
                select(InboxRow.id).where(InboxRow.pid == pid, InboxRow.kind == "result")
            ).one()

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

    def claim_due(
        self, owner: Owner, now: int, limit: int = 100, claim_s: float = CLAIM_S
    ) -> list[InboxMessage]:
        """Claim for ``owner`` (for ``claim_s``) the due deliveries no live server is trying.

        Due deliveries without a claim, whose claim ran out, or whose claimer's lease ended (a dead
        or fenced server's) are taken; PostgreSQL skips rows another claimer has locked, and the
        UPDATE's condition is the compare-and-set (all SQLite has). Raises Fenced if ``owner`` is
        not live.
        """
        db_now = db_now_us(self._engine)
        claimable = and_(
            InboxRow.next_try_at_us.is_not(None),
            InboxRow.next_try_at_us <= now,
            or_(
                InboxRow.owner_node_id.is_(None),
                InboxRow.claimed_until_us.is_(None),
                InboxRow.claimed_until_us <= db_now,
                not_(owner_is_live(self._engine, InboxRow.owner_node_id, InboxRow.owner_epoch)),
            ),
        )
        moved = {
            "owner_node_id": owner.node_id,
            "owner_epoch": owner.epoch,
            "claimed_until_us": db_now + int(claim_s * 1_000_000),
        }
        taken = claim_rows(
            self._engine, owner, InboxRow.id, claimable, InboxRow.next_try_at_us, limit, moved, _message
        )
        return sorted(taken, key=lambda m: (m.created_at_us, m.id))

    def delivered(self, message_id: int, owner: Owner | None = None) -> bool:
        """The webhook took the message; False if ``owner``'s claim was taken over (nothing written)."""
        values = {"delivered_at_us": now_us(), "next_try_at_us": None, "delivery_error": None}
        return self._set(message_id, values, owner)

    def failed(
        self, message_id: int, error: str, retry_at_us: int | None, owner: Owner | None = None
    ) -> bool:
        """The webhook did not take it: try again at ``retry_at_us``, or never (None).

        The claim is let go, so any server may make the next try; False if ``owner``'s claim was
        taken over meanwhile (nothing written).
        """
        return self._set(message_id, {"delivery_error": error[:512], "next_try_at_us": retry_at_us}, owner)

    def _set(self, message_id: int, values: Mapping[str, object], owner: Owner | None) -> bool:
        where = [InboxRow.id == message_id]
        if owner is not None:  # a compare-and-set on the claim: a peer that took it over wins
            where.append(_claimed_by(owner))
        with Session(self._engine) as session, session.begin():
            done = session.execute(
                update(InboxRow)
                .where(*where)
                .values(
                    **values,
                    attempts=InboxRow.attempts + 1,
                    owner_node_id=None,
                    owner_epoch=None,
                    claimed_until_us=None,
                )
                .returning(InboxRow.id)
            ).first()
            return done is not None

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
