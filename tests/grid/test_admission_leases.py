"""Admission from quota leases: local decisions from grants, one acquire when short, 429s as before."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from aigrid.clock import period_end_us, period_start_us
from aigrid.errors import APIError
from aigrid.grid.limits import Admission, Short
from aigrid.grid.quota import Leases
from aigrid.store.accounts import AccountStore
from aigrid.store.cluster import ClusterStore, Owner
from aigrid.store.db import make_engine, migrate
from aigrid.store.quota import QuotaStore


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(made)
    yield made
    made.dispose()


class _Node:
    """A stand-in for Membership: an owner and whether its lease holds."""

    def __init__(self, engine: Engine) -> None:
        self.owner: Owner | None = ClusterStore(engine).register("n", 60, None, {})
        self.live = True

    def current(self) -> Owner | None:
        return self.owner

    def holds(self) -> bool:
        return self.live


def _setup(
    engine: Engine,
    *,
    budget: int | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    fraction: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[Admission, Leases, _Node, int]:
    accounts = AccountStore(engine)
    accounts.create_tenant("acme")
    tid = accounts.tenant_id("acme")
    node = _Node(engine)
    store = QuotaStore(engine, window_s=60)
    leases = Leases(store, node.current, node.holds, fraction=fraction, wait_s=0.5, clock=clock)
    admission = Admission(leases=leases)
    if budget is not None:
        _, spent = accounts.set_budget("acme", "tokens", "day", budget)
        admission.set_budget(tid, "tokens", "day", budget, spent)
    if rpm is not None or tpm is not None:
        accounts.set_rate_limits("acme", rpm, tpm)
        admission.set_rate_limits(tid, rpm, tpm)
    return admission, leases, node, tid


async def test_the_first_request_acquires_then_requests_are_admitted_locally(engine: Engine) -> None:
    admission, leases, _, tid = _setup(engine, budget=1_000)
    with pytest.raises(Short):
        admission.reserve(tid, 10, 0)  # no grant yet: nothing is decided without the database
    first = await admission.admit(tid, 10, 0)
    g = leases.budget(tid, "tokens", "day", admission.budgets(tid)[0].period_start)
    assert g is not None and g.granted == 100 and g.used == 10
    admission.settle(first, 4, 0)
    assert g.used == 4
    # Covered by the grant: decided without any database call.
    second = admission.reserve(tid, 50, 0)
    assert g.used == 54
    admission.settle(second, 50, 0)
    await leases.aclose()
    assert [r.granted for r in leases.store.grants(tid, "tokens:day")] == [54]


async def test_a_spent_budget_is_refused_with_insufficient_quota(engine: Engine) -> None:
    admission, leases, _, tid = _setup(engine, budget=100)
    taken = await admission.admit(tid, 60, 0)
    admission.settle(taken, 60, 0)
    with pytest.raises(APIError) as refused:
        await admission.admit(tid, 60, 0)
    assert refused.value.status == 429 and refused.value.code == "insufficient_quota"
    await leases.aclose()


async def test_an_rpm_allowance_is_admitted_and_then_refused(engine: Engine) -> None:
    admission, leases, _, tid = _setup(engine, rpm=8)
    for _ in range(8):
        admission.settle(await admission.admit(tid, 1, 0), 1, 0)
    with pytest.raises(APIError) as refused:
        await admission.admit(tid, 1, 0)
    assert refused.value.code == "rate_limit_exceeded" and "Retry-After" in refused.value.headers
    await leases.aclose()


async def test_tpm_settles_back_what_a_request_did_not_use(engine: Engine) -> None:
    admission, leases, _, tid = _setup(engine, tpm=100)
    taken = await admission.admit(tid, 90, 0)
    admission.settle(taken, 10, 0)
    admission.settle(await admission.admit(tid, 90, 0), 90, 0)
    with pytest.raises(APIError, match="Request too large"):
        await admission.admit(tid, 101, 0)
    await leases.aclose()


async def test_no_lease_no_admission_and_a_new_epoch_drops_the_grants(engine: Engine) -> None:
    admission, leases, node, tid = _setup(engine, budget=1_000)
    admission.settle(await admission.admit(tid, 10, 0), 10, 0)
    node.live = False
    with pytest.raises(APIError) as refused:
        admission.reserve(tid, 10, 0)
    assert refused.value.status == 503 and refused.value.code == "not_live"
    node.live = True
    assert node.owner is not None
    leases.new_epoch(node.owner)
    with pytest.raises(Short):
        admission.reserve(tid, 10, 0)
    await leases.aclose()


async def test_an_empty_budget_pool_is_asked_again_after_a_while(engine: Engine) -> None:
    accounts = AccountStore(engine)
    now = [1000.0]
    # One grant takes the whole budget, so the pool is found empty.
    admission, leases, _, tid = _setup(engine, budget=100, fraction=1.0, clock=lambda: now[0])
    admission.settle(await admission.admit(tid, 60, 0), 60, 0)
    with pytest.raises(APIError, match="budget is spent"):
        await admission.admit(tid, 60, 0)
    # Raised in the database (as by another server): refused from memory until the recheck is due.
    accounts.set_budget("acme", "tokens", "day", 1_000)
    admission.set_budget(tid, "tokens", "day", 1_000, 60)
    with pytest.raises(APIError, match="budget is spent"):
        admission.reserve(tid, 60, 0)
    now[0] += 1.5
    admission.settle(await admission.admit(tid, 60, 0), 60, 0)
    await leases.aclose()


@pytest.mark.parametrize("iso", ["2026-12-31T23:59:59", "2026-01-15T00:00:00", "2028-02-28T12:00:00"])
@pytest.mark.parametrize("period", ["day", "month"])
def test_a_period_ends_where_the_next_one_starts(iso: str, period: str) -> None:
    at = int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1_000_000)
    start = period_start_us(period, at)
    end = period_end_us(period, start)
    assert start <= at < end
    assert period_start_us(period, end) == end and period_start_us(period, end - 1) == start
