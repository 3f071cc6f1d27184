"""Cluster membership: servers sharing one database register, hold leases and are fenced.

Every server registers under a node name and gets a new epoch (the name's previous epoch plus
one). It renews a lease on the database's clock every ``renew_s``; the lease ends ``lease_s``
after the database's "now" at the last renewal. A renewal is a compare-and-set on (id, epoch)
that also needs the lease not to have ended: a server paused past its lease (a "zombie") cannot
extend it afterwards and learns that it is fenced, so nothing it does can pass for the work of a
live owner. Ownership writes carry an ``Owner`` (node id and epoch) and check it in the same
transaction (``fence_check``) or in the statement (``owner_is_live``).

Peers learn of each other only through this table. PostgreSQL's clock decides leases for every
server of a cluster; on SQLite (one machine by definition) the Python clock stands in for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    cast,
    func,
    select,
)
from sqlalchemy import exists as sql_exists
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from aigrid.store.schema import ClusterNode

T = TypeVar("T")

log = logging.getLogger(__name__)
_NODES: Table = ClusterNode.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Owner:
    """Who owns a piece of work: a node and the epoch it registered with."""

    node_id: int
    epoch: int


class Fenced(Exception):
    """The owner's epoch was superseded or its lease ended: it may not write as that owner any more."""

    def __init__(self, owner: Owner, reason: str) -> None:
        super().__init__(f"node {owner.node_id} epoch {owner.epoch} is fenced: {reason}")
        self.owner = owner
        self.reason = reason


@dataclass(frozen=True)
class NodeView:
    """One node as the database sees it now."""

    id: int
    name: str
    epoch: int
    started_at_us: int
    lease_until_us: int
    heartbeat_at_us: int
    address: str | None
    stats: dict[str, Any]
    now_us: int

    @property
    def live(self) -> bool:
        """Whether its lease still runs on the database's clock."""
        return self.lease_until_us > self.now_us

    def to_json(self) -> dict[str, Any]:
        """The node as the admin API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "epoch": self.epoch,
            "live": self.live,
            "started_at_us": self.started_at_us,
            "lease_until_us": self.lease_until_us,
            "lease_left_s": round((self.lease_until_us - self.now_us) / 1e6, 3),
            "heartbeat_age_s": round((self.now_us - self.heartbeat_at_us) / 1e6, 3),
            "address": self.address,
            "load": self.stats,
        }


def _python_now_us() -> int:
    return time.time_ns() // 1000


def db_now_us(engine: Engine) -> ColumnElement[int]:
    """The database's "now" in microseconds since the epoch, as an expression for the statement.

    PostgreSQL's clock_timestamp() (not now(), which stands still for a whole transaction) is the
    one clock every server of a cluster shares. SQLite serves one machine, whose clock it is.
    """
    if engine.dialect.name == "postgresql":
        seconds = func.extract("epoch", func.clock_timestamp())
        return cast(func.floor(seconds * 1_000_000), BigInteger)
    return bindparam("db_now_us", callable_=_python_now_us, type_=BigInteger)


def owner_is_live(engine: Engine, node_id: Any, epoch: Any) -> ColumnElement[bool]:
    """A condition true where (node_id, epoch) is a node's current epoch and its lease still runs."""
    now = db_now_us(engine)
    return sql_exists().where(
        and_(_NODES.c.id == node_id, _NODES.c.epoch == epoch, _NODES.c.lease_until_us > now)
    )


def fence_check(conn: Connection, owner: Owner) -> None:
    """Raise Fenced unless ``owner`` holds a live lease; call inside the transaction that writes.

    On PostgreSQL the node's row is share-locked, so no renewal or takeover can slip in between
    the check and the commit of the write it guards.
    """
    engine = conn.engine
    now = db_now_us(engine)
    query = (
        select(_NODES.c.epoch, _NODES.c.lease_until_us, now.label("now"))
        .where(_NODES.c.id == owner.node_id)
        .with_for_update(read=True)
    )
    row = conn.execute(query).first()
    if row is None:
        raise Fenced(owner, "the node is not registered")
    if row.epoch != owner.epoch:
        raise Fenced(owner, f"superseded by epoch {row.epoch}")
    if row.lease_until_us <= row.now:
        raise Fenced(owner, "its lease ended")


def claim_rows(
    engine: Engine,
    owner: Owner,
    key: InstrumentedAttribute[Any],
    claimable: ColumnElement[bool],
    order_by: ColumnElement[Any] | InstrumentedAttribute[Any],
    limit: int,
    values: dict[str, Any],
    read: Callable[[Any], T],
) -> list[T]:
    """Move up to ``limit`` rows that are ``claimable`` to ``owner`` (setting ``values``); the rows
    taken, each as ``read`` makes it of its row (while the row is still bound to the session).

    The claimer must itself be live (Fenced if not). On PostgreSQL the candidates are locked
    ``FOR UPDATE SKIP LOCKED``, so claimers never wait on each other; the UPDATE repeats
    ``claimable``, the compare-and-set that is all SQLite needs: two claimers never get one row.
    """
    table = key.class_
    with Session(engine) as session, session.begin():
        fence_check(session.connection(), owner)
        picked = (
            select(key).where(claimable).order_by(order_by).limit(limit).with_for_update(skip_locked=True)
        )
        keys = list(session.scalars(picked))
        if not keys:
            return []
        moved = sql_update(table).where(key.in_(keys), claimable).values(**values).returning(table)
        return [read(row) for row in session.scalars(moved).all()]


class ClusterStore:
    """The cluster_nodes table: register, renew, leave and list."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, name: str, lease_s: float, address: str | None, stats: dict[str, Any]) -> Owner:
        """Take a new epoch under ``name`` with a fresh lease (inserting the node the first time)."""
        lease_us = int(lease_s * 1_000_000)
        now = db_now_us(self.engine)
        values = {
            "started_at_us": now,
            "lease_until_us": now + lease_us,
            "heartbeat_at_us": now,
            "address": address,
            "stats": orjson.dumps(stats).decode(),
        }
        for _ in range(3):
            with self.engine.begin() as conn:
                bumped = conn.execute(
                    _NODES.update()
                    .where(_NODES.c.name == name)
                    .values(epoch=_NODES.c.epoch + 1, **values)
                    .returning(_NODES.c.id, _NODES.c.epoch)
                ).first()
                if bumped is not None:
                    return Owner(bumped.id, bumped.epoch)
            try:
                with self.engine.begin() as conn:
                    made = conn.execute(
                        _NODES.insert().values(name=name, epoch=1, **values).returning(_NODES.c.id)
                    ).scalar_one()
                    return Owner(made, 1)
            except IntegrityError:
                continue  # another server inserted the name first: take the next epoch from it
        raise RuntimeError(f"could not register node {name!r}")

    def renew(self, owner: Owner, lease_s: float, stats: dict[str, Any]) -> str | None:
        """Extend the lease; None when renewed, else why ``owner`` is fenced (nothing is written then)."""
        lease_us = int(lease_s * 1_000_000)
        now = db_now_us(self.engine)
        with self.engine.begin() as conn:
            renewed = conn.execute(
                _NODES.update()
                .where(
                    _NODES.c.id == owner.node_id, _NODES.c.epoch == owner.epoch, _NODES.c.lease_until_us > now
                )
                .values(
                    lease_until_us=now + lease_us, heartbeat_at_us=now, stats=orjson.dumps(stats).decode()
                )
            ).rowcount
            if renewed:
                return None
            current = conn.execute(select(_NODES.c.epoch).where(_NODES.c.id == owner.node_id)).scalar()
        if current is None:
            return "the node is not registered"
        if current != owner.epoch:
            return f"superseded by epoch {current}"
        return "its lease ended before it was renewed"

    def reregister(self, owner: Owner, lease_s: float, stats: dict[str, Any]) -> Owner | None:
        """After a lost lease, take the next epoch, unless another server has taken the name since."""
        lease_us = int(lease_s * 1_000_000)
        now = db_now_us(self.engine)
        with self.engine.begin() as conn:
            row = conn.execute(
                _NODES.update()
                .where(_NODES.c.id == owner.node_id, _NODES.c.epoch == owner.epoch)
                .values(
                    epoch=owner.epoch + 1,
                    lease_until_us=now + lease_us,
                    heartbeat_at_us=now,
                    stats=orjson.dumps(stats).decode(),
                )
                .returning(_NODES.c.epoch)
            ).first()
        return None if row is None else Owner(owner.node_id, row.epoch)

    def leave(self, owner: Owner) -> None:
        """End the lease now (a clean stop), so that peers need not wait for it to run out."""
        now = db_now_us(self.engine)
        with self.engine.begin() as conn:
            conn.execute(
                _NODES.update()
                .where(_NODES.c.id == owner.node_id, _NODES.c.epoch == owner.epoch)
                .values(lease_until_us=now)
            )

    def nodes(self) -> list[NodeView]:
        """Every node ever registered, by name, as the database sees it now."""
        now = db_now_us(self.engine)
        with self.engine.connect() as conn:
            rows = conn.execute(select(_NODES, now.label("now_us")).order_by(_NODES.c.name)).all()
        return [
            NodeView(
                id=r.id,
                name=r.name,
                epoch=r.epoch,
                started_at_us=r.started_at_us,
                lease_until_us=r.lease_until_us,
                heartbeat_at_us=r.heartbeat_at_us,
                address=r.address,
                stats=orjson.loads(r.stats) if r.stats else {},
                now_us=r.now_us,
            )
            for r in rows
        ]


Stats = Callable[[], dict[str, Any]]


class Membership:
    """This server's place in the cluster: registers, renews its lease, and knows whether it is live.

    ``live`` turns false as soon as the lease could have ended without a renewal (measured on the
    monotonic clock from before the last renewal was sent, so never later than the database's end
    of the lease). When a renewal finds the lease ended, the server is fenced: whatever it owned
    under that epoch may have been taken up by a peer, so it takes a new epoch and starts afresh.
    When another server took its name (a newer epoch it did not make), it stays not live.
    """

    def __init__(
        self,
        store: ClusterStore,
        name: str,
        *,
        lease_s: float = 15.0,
        renew_s: float = 5.0,
        address: str | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.address = address
        self.stats: Stats = stats or dict
        self._owner: Owner | None = None
        self.live = False
        self.live_event = asyncio.Event()
        self.fenced = 0
        self.last_fence: str | None = None
        self._deadline = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[Owner], None]] = []

    @property
    def owner(self) -> Owner:
        """The current owner (node id and epoch); only after ``join``."""
        assert self._owner is not None, "Membership.join() was not called"
        return self._owner

    def current(self) -> Owner | None:
        """The current owner, or None before ``join`` (for writers that stamp rows)."""
        return self._owner

    def on_new_epoch(self, listener: Callable[[Owner], None]) -> None:
        """Call ``listener`` with the new owner each time this server takes a new epoch after a fence."""
        self._listeners.append(listener)

    def join(self) -> Owner:
        """Register with a new epoch (blocking; at start, before anything else takes up work)."""
        before = time.monotonic()
        previous = {n.name: n for n in self.store.nodes()}.get(self.name)
        if previous is not None and previous.live:
            log.warning(
                "node %r (epoch %d) still held a lease: taking over its name with a new epoch; if another "
                "server runs under this name, give each its own (aigrid serve --node)",
                self.name,
                previous.epoch,
            )
        self._owner = self.store.register(self.name, self.lease_s, self.address, self._safe_stats())
        self._deadline = before + self.lease_s
        self.live = True
        log.info("joined the cluster as node %r, epoch %d", self.name, self._owner.epoch)
        return self._owner

    async def start(self) -> None:
        """Begin renewing the lease; call on the event loop after ``join``."""
        if self.live:
            self.live_event.set()
            self._arm_expiry()
        self._task = asyncio.create_task(self._renew_forever(), name="cluster-membership")

    async def aclose(self) -> None:
        """Stop renewing and end the lease, so that peers see this server gone at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._expiry is not None:
            self._expiry.cancel()
        if self._owner is not None and self.live:
            try:
                await asyncio.to_thread(self.store.leave, self._owner)
            except Exception:
                log.warning("could not end this node's lease; it runs out by itself", exc_info=True)
        self._set_live(False)

    def holds(self) -> bool:
        """Whether the lease surely holds now: live, and its local deadline not yet passed.

        Cheaper than a database call and never later than the database's end of the lease, so
        work admitted under it (quota grants) stops before peers may reclaim what it holds.
        """
        return self.live and time.monotonic() < self._deadline

    async def wait_live(self) -> None:
        """Wait until this server holds a live lease."""
        await self.live_event.wait()

    def _safe_stats(self) -> dict[str, Any]:
        try:
            return self.stats()
        except Exception:  # load figures are for operators; a failing one must not cost the lease
            log.warning("reading this node's load failed", exc_info=True)
            return {}

    def _set_live(self, live: bool) -> None:
        self.live = live
        if live:
            self.live_event.set()
        else:
            self.live_event.clear()

    def _arm_expiry(self) -> None:
        # The lease is counted from before the renewal was sent, so this fires no later than the
        # database's own end of the lease (clocks drift far less than a lease in between).
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        delay = self._deadline - time.monotonic()
        self._expiry = loop.call_at(loop.time() + max(0.0, delay), self._expire)

    def _expire(self) -> None:
        if self.live and time.monotonic() >= self._deadline:
            log.error("node %r could not renew its lease in time: it stops taking work", self.name)
            self._set_live(False)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                await self._renew_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("renewing node %r's lease failed; retrying", self.name, exc_info=True)

    async def _renew_once(self) -> None:
        owner = self.owner
        sent = time.monotonic()
        fenced = await asyncio.to_thread(self.store.renew, owner, self.lease_s, self._safe_stats())
        if fenced is None:
            self._deadline = sent + self.lease_s
            self._set_live(True)
            self._arm_expiry()
            return
        self.fenced += 1
        self.last_fence = fenced
        self._set_live(False)
        log.error("node %r epoch %d is fenced: %s", self.name, owner.epoch, fenced)
        if fenced.startswith("superseded"):
            return await self._stay_out()
        sent = time.monotonic()
        new = await asyncio.to_thread(self.store.reregister, owner, self.lease_s, self._safe_stats())
        if new is None:
            return await self._stay_out()
        self._owner = new
        self._deadline = sent + self.lease_s
        for listener in self._listeners:
            listener(new)
        self._set_live(True)
        self._arm_expiry()
        log.warning("node %r rejoined the cluster with epoch %d", self.name, new.epoch)

    async def _stay_out(self) -> None:
        log.error("another server took node name %r: this one takes no work until it is restarted", self.name)
        # Renewing would only fence the other server in turn; wait here until the server stops.
        await asyncio.Event().wait()
