"""Quota grants on SQLite and PostgreSQL: the sum of grants keeps to the limit, fencing, dead owners."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import Engine, insert

from aigrid.clock import now_us
from aigrid.store.accounts import AccountStore
from aigrid.store.cluster import ClusterStore, Fenced, Owner
from aigrid.store.quota import QuotaStore, window_allowance
from aigrid.store.schema import LedgerEntry


def _spend(engine: Engine, tenant_id: int, owner: Owner, tokens: int) -> None:
    """A ledger row of ``tokens`` written by ``owner`` (what its server consumed of its grant)."""
    with engine.begin() as conn:
        conn.execute(
            insert(LedgerEntry).values(
                id="req_" + uuid.uuid4().hex[:20],
                created_at_us=now_us(),
                tenant_id=tenant_id,
                endpoint="chat",
                model="mock",
                status="ok",
                prompt_tokens=tokens,
                completion_tokens=0,
                cost_micro=0,
                node_id=owner.node_id,
                node_epoch=owner.epoch,
            )
        )


def _tenant(engine: Engine, budget: int | None = None, rpm: int | None = None) -> int:
    accounts = AccountStore(engine)
    accounts.create_tenant("acme")
    if budget is not None:
        accounts.set_budget("acme", "tokens", "day", budget)
    if rpm is not None:
        accounts.set_rate_limits("acme", rpm, None)
    return accounts.tenant_id("acme")


def test_concurrent_owners_never_spend_more_than_the_budget_and_can_spend_all_of_it(engine: Engine) -> None:
    tenant = _tenant(engine, budget=5_000)
    cluster, quota = ClusterStore(engine), QuotaStore(engine)
    owners = [cluster.register(f"n{i}", 60, None, {}) for i in range(4)]
    spent = {o: 0 for o in owners}

    def run(owner: Owner) -> None:
        # Each owner spends all it is granted and asks again, until the pool is empty.
        while True:
            grant = quota.acquire_budget(owner, tenant, "tokens", "day", 37, 100)
            assert grant is not None and grant.limit == 5_000
            fresh = grant.granted - spent[owner]
            assert 0 <= fresh <= 100
            if fresh:
                _spend(engine, tenant, owner, fresh)
                spent[owner] += fresh
            elif grant.remaining == 0:
                return

    threads = [threading.Thread(target=run, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(spent.values()) == 5_000
    assert all(v > 0 for v in spent.values())


def test_an_owner_outstanding_grant_stays_within_the_cap(engine: Engine) -> None:
    tenant = _tenant(engine, budget=10_000)
    owner = ClusterStore(engine).register("n", 60, None, {})
    quota = QuotaStore(engine)
    first = quota.acquire_budget(owner, tenant, "tokens", "day", 80, 100)
    again = quota.acquire_budget(owner, tenant, "tokens", "day", 80, 100)
    assert first is not None and again is not None
    assert (first.granted, again.granted) == (80, 100)
    _spend(engine, tenant, owner, 60)
    more = quota.acquire_budget(owner, tenant, "tokens", "day", 80, 100)
    assert more is not None and more.granted == 160 and more.remaining == 10_000 - 160


def test_no_budget_no_grant(engine: Engine) -> None:
    tenant = _tenant(engine)
    owner = ClusterStore(engine).register("n", 60, None, {})
    assert QuotaStore(engine).acquire_budget(owner, tenant, "tokens", "day", 10, 10) is None
    assert QuotaStore(engine).acquire_rate(owner, tenant, "rpm", 1) is None


def test_concurrent_owners_share_a_rate_window_up_to_its_allowance(engine: Engine) -> None:
    tenant = _tenant(engine, rpm=600)
    cluster, quota = ClusterStore(engine), QuotaStore(engine, window_s=30)
    allowance = window_allowance(600, 30)
    assert allowance == 300
    owners = [cluster.register(f"n{i}", 60, None, {}) for i in range(4)]
    got: dict[Owner, tuple[int, int]] = {}

    def run(owner: Owner) -> None:
        while True:
            grant = quota.acquire_rate(owner, tenant, "rpm", 7)
            assert grant is not None
            got[owner] = (grant.granted, grant.start_us)
            if grant.remaining == 0:
                return

    threads = [threading.Thread(target=run, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    starts = {start for _, start in got.values()}
    if len(starts) == 1:  # the test did not straddle a window's end
        assert sum(g for g, _ in got.values()) == allowance
    rows = quota.grants(tenant, "rpm")
    for start in starts:
        assert sum(r.granted for r in rows if r.window_start_us == start) <= allowance


def test_a_fenced_owner_cannot_take_a_grant(engine: Engine) -> None:
    tenant = _tenant(engine, budget=1_000, rpm=60)
    cluster, quota = ClusterStore(engine), QuotaStore(engine)
    old = cluster.register("n", 60, None, {})
    cluster.register("n", 60, None, {})
    with pytest.raises(Fenced, match="superseded"):
        quota.acquire_budget(old, tenant, "tokens", "day", 10, 10)
    lapsed = cluster.register("m", 0.2, None, {})
    time.sleep(0.4)
    with pytest.raises(Fenced, match="lease ended"):
        quota.acquire_rate(lapsed, tenant, "rpm", 1)
    assert quota.grants(tenant, "tokens:day") == [] and quota.grants(tenant, "rpm") == []


@pytest.mark.parametrize("strict", [False, True])
def test_a_dead_owner_grant_is_reclaimed_or_frozen(engine: Engine, strict: bool) -> None:
    tenant = _tenant(engine, budget=1_000)
    cluster, quota = ClusterStore(engine), QuotaStore(engine, strict=strict)
    dead, live = cluster.register("dead", 60, None, {}), cluster.register("live", 60, None, {})
    assert quota.acquire_budget(dead, tenant, "tokens", "day", 100, 100) is not None
    _spend(engine, tenant, dead, 30)
    cluster.leave(dead)  # its lease has ended: 70 of its grant unrecorded
    grant = quota.acquire_budget(live, tenant, "tokens", "day", 5_000, 5_000)
    assert grant is not None
    assert grant.granted == (1_000 - 30 - 70 if strict else 1_000 - 30)
    if strict:
        # An admin's reset (setting the budget again) drops the frozen grant.
        assert quota.forget_dead(tenant, "tokens:day") == 1
        again = quota.acquire_budget(live, tenant, "tokens", "day", 5_000, 5_000)
        assert again is not None and again.granted == 970


def test_handing_back_is_idempotent_and_returns_to_the_pool(engine: Engine) -> None:
    tenant = _tenant(engine, budget=1_000)
    cluster, quota = ClusterStore(engine), QuotaStore(engine, strict=True)
    a, b = cluster.register("a", 60, None, {}), cluster.register("b", 60, None, {})
    grant = quota.acquire_budget(a, tenant, "tokens", "day", 600, 600)
    assert grant is not None and grant.granted == 600
    _spend(engine, tenant, a, 200)
    for _ in range(2):
        quota.release(a, tenant, "tokens:day", grant.start_us, 200)
    assert [r.granted for r in quota.grants(tenant, "tokens:day")] == [200]
    other = quota.acquire_budget(b, tenant, "tokens", "day", 5_000, 5_000)
    assert other is not None and other.granted == 800
