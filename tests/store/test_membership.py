"""Cluster membership on SQLite and on a real PostgreSQL: epochs, leases, fencing and recovery."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import OperationalError

from aigrid.config import ClusterConfig, ConfigError, load_config
from aigrid.store.cluster import ClusterStore, Fenced, Membership, Owner, fence_check
from aigrid.store.db import make_engine, migrate
from aigrid.store.ledger import InterruptedSweep, Ledger, recover_interrupted
from aigrid.store.schema import LedgerEntry


def _row(engine: Engine, row_id: str, owner: Owner | None, status: str = "in_progress") -> None:
    values: dict[str, Any] = {
        "id": row_id,
        "created_at_us": 1,
        "tenant_id": 1,
        "endpoint": "chat",
        "model": "mock",
        "status": status,
        "node_id": owner.node_id if owner else None,
        "node_epoch": owner.epoch if owner else None,
    }
    with engine.begin() as conn:
        conn.execute(insert(LedgerEntry).values(values))


def _status(engine: Engine, row_id: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(LedgerEntry.status).where(LedgerEntry.id == row_id)).scalar_one())


def test_a_name_registered_again_takes_the_next_epoch_and_fences_the_old_one(engine: Engine) -> None:
    store = ClusterStore(engine)
    first = store.register("alpha", 30, "http://a", {})
    other = store.register("beta", 30, None, {})
    assert first.epoch == 1 and other.epoch == 1 and other.node_id != first.node_id
    second = store.register("alpha", 30, "http://a", {})
    assert second == Owner(first.node_id, 2)
    assert store.renew(first, 30, {}) == "superseded by epoch 2"
    assert store.renew(second, 30, {"requests_in_flight": 3}) is None
    with engine.begin() as conn, pytest.raises(Fenced, match="superseded"):
        fence_check(conn, first)
    # The old epoch cannot take the name back by re-registering either.
    assert store.reregister(first, 30, {}) is None
    alpha = {n.name: n for n in store.nodes()}["alpha"]
    assert alpha.epoch == 2 and alpha.live and alpha.stats == {"requests_in_flight": 3}
    assert alpha.to_json()["address"] == "http://a"


def test_a_lease_that_ran_out_cannot_be_renewed_and_the_node_shows_not_live(engine: Engine) -> None:
    store = ClusterStore(engine)
    owner = store.register("alpha", 0.3, None, {})
    assert store.renew(owner, 0.3, {}) is None
    time.sleep(0.5)
    assert not {n.name: n for n in store.nodes()}["alpha"].live
    assert store.renew(owner, 0.3, {}) == "its lease ended before it was renewed"
    with engine.begin() as conn, pytest.raises(Fenced, match="lease ended"):
        fence_check(conn, owner)
    fresh = store.reregister(owner, 30, {})
    assert fresh == Owner(owner.node_id, owner.epoch + 1)
    assert store.renew(fresh, 30, {}) is None
    assert store.renew(owner, 30, {}) == "superseded by epoch 2"


def test_a_clean_leave_ends_the_lease_at_once(engine: Engine) -> None:
    store = ClusterStore(engine)
    owner = store.register("alpha", 30, None, {})
    store.leave(owner)
    assert not store.nodes()[0].live
    assert store.renew(owner, 30, {}) is not None


def test_recovery_marks_the_rows_of_gone_owners_and_never_a_live_peers(engine: Engine) -> None:
    store = ClusterStore(engine)
    peer = store.register("peer", 30, None, {})
    dying = store.register("dying", 0.3, None, {})
    mine_before = store.register("me", 30, None, {})
    _row(engine, "peer-stream", peer)
    _row(engine, "dying-stream", dying)
    _row(engine, "my-last-run", mine_before)
    _row(engine, "before-clusters", None)
    _row(engine, "peer-done", peer, status="ok")
    time.sleep(0.5)
    me = store.register("me", 30, None, {})  # a restart: the previous epoch's rows are not live
    assert recover_interrupted(engine, me) == 3
    assert _status(engine, "peer-stream") == "in_progress", "a live peer's stream is left alone"
    assert _status(engine, "peer-done") == "ok"
    for gone in ("dying-stream", "my-last-run", "before-clusters"):
        assert _status(engine, gone) == "interrupted"
    # Once the peer leaves, its row is no one's: the next recovery marks it.
    store.leave(peer)
    assert recover_interrupted(engine, me) == 1
    assert _status(engine, "peer-stream") == "interrupted"


def test_a_fenced_server_recovers_nothing(engine: Engine) -> None:
    store = ClusterStore(engine)
    zombie = store.register("zombie", 0.2, None, {})
    _row(engine, "orphan", None)
    time.sleep(0.4)
    with pytest.raises(Fenced):
        recover_interrupted(engine, zombie)
    assert _status(engine, "orphan") == "in_progress"


async def test_the_ledger_stamps_new_rows_with_their_owner(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    migrate(engine)
    owner = ClusterStore(engine).register("alpha", 30, None, {})
    ledger = Ledger(engine, tmp_path / "journal", owner=lambda: owner)
    ledger.start()
    row = {"id": "r1", "created_at_us": 1, "tenant_id": 1, "endpoint": "chat", "model": "m"}
    await ledger.write({**row, "status": "in_progress"})
    await ledger.flush()
    await ledger.aclose()
    with engine.connect() as conn:
        stamped = conn.execute(select(LedgerEntry.node_id, LedgerEntry.node_epoch)).one()
    assert tuple(stamped) == (owner.node_id, owner.epoch)
    engine.dispose()


class DatabaseDownStore(ClusterStore):
    """Test double: a store whose renewals fail while ``down`` is set, as with an unreachable database."""

    down = False

    def renew(self, owner: Owner, lease_s: float, stats: dict[str, Any]) -> str | None:
        if self.down:
            raise OperationalError("renew", {}, Exception("connection refused"))
        return super().renew(owner, lease_s, stats)


async def test_a_server_that_cannot_renew_goes_not_live_then_rejoins_fenced_with_a_new_epoch(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    store = DatabaseDownStore(engine)
    membership = Membership(store, "alpha", lease_s=0.6, renew_s=0.1, stats=lambda: {"n": 1})
    epochs: list[int] = []
    membership.on_new_epoch(lambda owner: epochs.append(owner.epoch))
    first = await asyncio.to_thread(membership.join)
    await membership.start()
    try:
        assert membership.live and membership.live_event.is_set()
        await asyncio.sleep(0.8)
        assert membership.live, "renewals keep the lease"
        store.down = True
        await asyncio.sleep(0.9)
        assert not membership.live and not membership.live_event.is_set()
        store.down = False
        await asyncio.wait_for(membership.wait_live(), 5)
        assert membership.owner == Owner(first.node_id, first.epoch + 1)
        assert epochs == [first.epoch + 1] and membership.fenced == 1
        assert membership.last_fence == "its lease ended before it was renewed"
    finally:
        await membership.aclose()
    assert not membership.live
    assert not store.nodes()[0].live, "a clean stop ends the lease"
    engine.dispose()


async def test_a_server_whose_name_another_took_stays_out(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'n.db'}")
    migrate(engine)
    store = ClusterStore(engine)
    membership = Membership(store, "alpha", lease_s=5, renew_s=0.1)
    await asyncio.to_thread(membership.join)
    await membership.start()
    try:
        store.register("alpha", 5, None, {})  # a second server started under the same name
        await asyncio.sleep(0.4)
        assert not membership.live and membership.last_fence == "superseded by epoch 2"
        await asyncio.sleep(0.3)
        assert store.nodes()[0].epoch == 2, "the fenced one does not take the name back"
    finally:
        await membership.aclose()
    engine.dispose()


async def test_the_sweep_marks_a_dead_servers_rows_and_a_fenced_one_sweeps_nothing(engine: Engine) -> None:
    store = ClusterStore(engine)
    me = store.register("me", 30, None, {})
    dead = store.register("dead", 0.2, None, {})
    zombie = store.register("zombie", 0.2, None, {})
    _row(engine, "dead-stream", dead)
    _row(engine, "my-stream", me)
    await asyncio.sleep(0.4)
    assert await InterruptedSweep(engine, lambda: zombie, 1).sweep() == 0, "a fenced server marks nothing"
    assert _status(engine, "dead-stream") == "in_progress"
    assert await InterruptedSweep(engine, lambda: me, 1).sweep() == 1
    assert (_status(engine, "dead-stream"), _status(engine, "my-stream")) == ("interrupted", "in_progress")


def test_the_cluster_config_refuses_a_renewal_slower_than_the_lease(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[cluster]\nnode = "gw-1"\nlease_s = 5\nrenew_s = 5\n')
    with pytest.raises(ConfigError, match=r"cluster: .*renew_s \(5.0\) must be shorter than lease_s"):
        load_config(config)
    config.write_text('[cluster]\nnode = "gw-1"\nlease_s = 6\nrenew_s = 2\n')
    cluster = load_config(config).cluster
    assert (cluster.node, cluster.lease_s, cluster.renew_s) == ("gw-1", 6, 2)
    assert (ClusterConfig().lease_s, ClusterConfig().renew_s) == (15, 5)
