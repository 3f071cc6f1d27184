"""Sagas on two aigrid servers sharing one real PostgreSQL, with the example services: a live peer's
saga is left alone, a killed server's is finished by the other exactly once, and a server paused
past its lease (a zombie) commits nothing when it wakes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.api.test_entry_api import balance, call, consistent, ledger, register
from tests.examples.test_services import Service, running_services
from tests.postgres import Postgres
from tests.support import LiveServer, mock_config, until

from aigrid.store.cluster import ClusterStore, Owner
from aigrid.store.db import make_engine
from aigrid.store.schema import EntryJournalRow, EntryRow

pytestmark = pytest.mark.slow

LEASE_S = 3.0
PEN = {"northwind": 18_900, "lakeside": 19_900}


def _config(upstream: str, database_url: str, node: str) -> str:
    cluster = f'[cluster]\nnode = "{node}"\nlease_s = {LEASE_S}\nrenew_s = 0.5\n'
    return mock_config(upstream, extra=f'database_url = "{database_url}"\n{cluster}')


def pen(shop: str) -> dict[str, Any]:
    """A plan buying one fountain pen from ``shop``."""
    return {
        "steps": [
            {"id": "a", "call": f"{shop}.search", "args": {"query": "quill fountain pen"}},
            {"id": "pick", "choose": "cheapest", "from": ["a"], "where": "available"},
            {"id": "buy", "call": f"{shop}.create_order", "args": {"sku": "$pick.sku", "quantity": 1}},
        ]
    }


@dataclass
class Cluster:
    """Two servers, alpha and beta, on one database, with the example services registered."""

    url: str
    alpha: LiveServer
    beta: LiveServer
    services: dict[str, Service]
    key: str

    def row(self, entry_id: str) -> tuple[str, Owner | None, int]:
        """The entry's state, owner and number of journaled steps, as the database has them."""
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                entry = conn.execute(select(EntryRow).where(EntryRow.id == entry_id)).one()
                steps = conn.execute(select(EntryJournalRow.id).where(EntryJournalRow.entry_id == entry_id))
                owner = None if entry.owner_node_id is None else Owner(entry.owner_node_id, entry.owner_epoch)
                return entry.state, owner, len(steps.all())
        finally:
            engine.dispose()

    def node(self, name: str) -> Owner:
        """The named server's node and current epoch."""
        engine = make_engine(self.url)
        try:
            found = {n.name: n for n in ClusterStore(engine).nodes()}[name]
            return Owner(found.id, found.epoch)
        finally:
            engine.dispose()

    def running(self, shop: str) -> str:
        """An entry asked and confirmed on alpha while ``shop`` is down: its saga waits mid-way."""
        asked = call(
            self.alpha,
            self.key,
            "POST",
            "/v1/entry",
            json={"input": "buy a fountain pen", "user": "alice", "plan": pen(shop)},
        )
        assert asked.status_code == 200 and asked.json()["state"] == "awaiting_confirmation", asked.text
        self.services[shop].stop()
        entry_id = str(asked.json()["id"])
        confirmed = call(self.alpha, self.key, "POST", f"/v1/entry/{entry_id}/confirm", json={"wait": 1})
        assert confirmed.status_code == 200 and confirmed.json()["state"] == "running", confirmed.text
        until(lambda: self.row(entry_id)[2] >= 3, "the authorisation is journaled and the order begun")
        return entry_id


def _services_up(server: LiveServer) -> bool:
    listed = server.admin("GET", "/v1/services").json()["data"]
    return len(listed) == 5 and all(s["status"] == "up" for s in listed)


@pytest.fixture(scope="module")
def cluster(
    postgres: Postgres, mock_upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster-entries")
    url = postgres.new_database()
    with running_services(tmp_path_factory.mktemp("cluster-services")) as services:
        alpha = LiveServer(base / "a", _config(mock_upstream, url, "alpha")).start()
        beta = LiveServer(base / "b", _config(mock_upstream, url, "beta"))
        try:
            beta.start()
            register(alpha, services)
            until(lambda: _services_up(beta), "beta opens the services registered through alpha")
            key = alpha.new_tenant_key("shoppers", users=("alice",))
            yield Cluster(url, alpha, beta, services, key)
        finally:
            beta.stop()
            alpha.stop()


def _paid_for(cluster: Cluster, shop: str, before_orders: int) -> None:
    """One new order at ``shop``, paid once: alice's wallet lost its price, nothing is held."""
    orders = ledger(cluster.services, shop)
    assert len(orders) == before_orders + 1, orders
    assert orders[-1]["amount_cents"] == PEN[shop]


def test_a_restarted_peer_leaves_a_live_servers_saga_alone(cluster: Cluster) -> None:
    before, orders = balance(cluster.services, "alice"), len(ledger(cluster.services, "lakeside"))
    entry_id = cluster.running("lakeside")
    alpha = cluster.node("alpha")
    state, owner, _ = cluster.row(entry_id)
    assert (state, owner) == ("running", alpha)
    cluster.beta.kill()
    cluster.beta.start()
    time.sleep(2 * LEASE_S)  # beta's recovery at start and at least one round after
    assert cluster.row(entry_id)[:2] == ("running", alpha), "alpha's saga is alpha's"
    assert "carrying on the saga" not in cluster.beta.log()
    cluster.services["lakeside"].start().ready()
    until(lambda: cluster.row(entry_id)[0] == "done", "alpha finishes its saga", timeout_s=120)
    assert cluster.row(entry_id)[1] == alpha
    _paid_for(cluster, "lakeside", orders)
    assert balance(cluster.services, "alice") == before - PEN["lakeside"]
    consistent(cluster.services)


def test_a_killed_servers_saga_is_finished_by_the_other_exactly_once(cluster: Cluster) -> None:
    before, orders = balance(cluster.services, "alice"), len(ledger(cluster.services, "northwind"))
    entry_id = cluster.running("northwind")
    cluster.alpha.kill()  # mid-saga: authorised, the order begun and not answered
    cluster.services["northwind"].start().ready()
    until(lambda: cluster.row(entry_id)[0] == "done", "beta finishes alpha's saga", timeout_s=120)
    assert cluster.row(entry_id)[1] == cluster.node("beta")
    assert f"entry {entry_id}: carrying on the saga" in cluster.beta.log()
    _paid_for(cluster, "northwind", orders)
    assert balance(cluster.services, "alice") == before - PEN["northwind"], "charged once"
    consistent(cluster.services)
    cluster.alpha.start()


def test_a_zombie_server_commits_nothing(cluster: Cluster) -> None:
    before, orders = balance(cluster.services, "alice"), len(ledger(cluster.services, "northwind"))
    entry_id = cluster.running("northwind")
    epoch = cluster.node("alpha").epoch
    proc = cluster.alpha.proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    paused = time.monotonic()
    try:
        cluster.services["northwind"].start().ready()
        until(lambda: cluster.row(entry_id)[0] == "done", "beta finishes the paused server's saga")
        time.sleep(max(0.0, 3 * LEASE_S - (time.monotonic() - paused)))
        finished = cluster.row(entry_id)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    until(lambda: cluster.node("alpha").epoch == epoch + 1, "alpha wakes, is fenced and rejoins")
    until(lambda: httpx.get(cluster.alpha.url + "/healthz", timeout=5).status_code == 200, "alpha is live")
    time.sleep(LEASE_S)  # what the woken saga would have written, it would have by now
    assert cluster.row(entry_id) == finished, "the zombie wrote nothing: not a step, not a state"
    assert finished[1] == cluster.node("beta")
    _paid_for(cluster, "northwind", orders)
    assert balance(cluster.services, "alice") == before - PEN["northwind"], "charged once"
    consistent(cluster.services)
