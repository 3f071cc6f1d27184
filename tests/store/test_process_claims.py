"""Process ownership on SQLite and on a real PostgreSQL: claiming orphans, and fenced step writes."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, insert, text

from aigrid.spec import AgentSpec
from aigrid.store.accounts import AccountStore
from aigrid.store.agents import AgentStore, StoredSpec
from aigrid.store.cluster import ClusterStore, Owner
from aigrid.store.process_claims import ProcessClaims
from aigrid.store.processes import NotOwner, ProcessStore, StepUsage
from aigrid.store.schema import LedgerEntry
from aigrid.store.shares import process_usage


def _agent(engine: Engine) -> tuple[int, StoredSpec]:
    tenant = AccountStore(engine).ensure_tenant("acme")
    spec = AgentSpec.model_validate({"name": "shopper", "instructions": "Buy."})
    stored, _ = AgentStore(engine).save(tenant, spec)
    return tenant, stored


def test_orphans_are_claimed_and_a_live_peers_processes_are_not(engine: Engine) -> None:
    nodes, store, claims = ClusterStore(engine), ProcessStore(engine), ProcessClaims(engine)
    tenant, agent = _agent(engine)
    me, peer = nodes.register("me", 30, None, {}), nodes.register("peer", 30, None, {})
    dying = nodes.register("dying", 0.3, None, {})
    unowned = store.create(tenant, agent, "from before clusters").pid
    peers = store.create(tenant, agent, "a live peer's", owner=peer).pid
    dead = store.create(tenant, agent, "a dead peer's", owner=dying).pid
    finished = store.create(tenant, agent, "done", owner=dying).pid
    store.set_state(finished, "done", result="ok")
    mine_before = store.create(tenant, agent, "my last epoch's", owner=me).pid
    me_now = nodes.register("me", 30, None, {})  # restarted: a new epoch
    time.sleep(0.5)
    claimed = claims.claim(me_now)
    assert {p.pid for p in claimed} == {unowned, dead, mine_before}
    assert all((p.owner_node_id, p.owner_epoch) == (me_now.node_id, me_now.epoch) for p in claimed)
    assert claims.claim(me_now) == []  # all taken: mine now, and my lease runs
    assert store.get(peers).owner_node_id == peer.node_id
    assert claims.claim_one(peers, me_now) is None
    assert {p.pid for p in claims.owned(me_now, ("ready",))} == {unowned, dead, mine_before}
    # An owner whose lease ended claims nothing, not even the orphans.
    late = store.create(tenant, agent, "orphan", owner=dying).pid
    assert claims.claim(me) == [] and claims.claim_one(late, me) is None
    assert claims.claim_one(late, me_now) is not None


def test_two_claimers_never_get_the_same_process(engine: Engine) -> None:
    nodes, store = ClusterStore(engine), ProcessStore(engine)
    tenant, agent = _agent(engine)
    pids = {store.create(tenant, agent, f"job {i}").pid for i in range(300)}
    owners = [nodes.register(f"node-{i}", 30, None, {}) for i in range(3)]
    got: dict[int, list[str]] = {o.node_id: [] for o in owners}
    start = threading.Barrier(len(owners))

    def claimer(owner: Owner) -> None:
        claims = ProcessClaims(engine)
        start.wait()
        while batch := claims.claim(owner, 7):
            got[owner.node_id] += [p.pid for p in batch]

    threads = [threading.Thread(target=claimer, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [pid for pids_of in got.values() for pid in pids_of]
    assert len(every) == len(set(every)) == 300 and set(every) == pids
    for owner in owners:  # each claimed process names its claimer
        assert {p.pid for p in ProcessClaims(engine).owned(owner, ("ready",))} == set(got[owner.node_id])


def test_a_fenced_owners_step_writes_are_refused(engine: Engine) -> None:
    nodes, store, claims = ClusterStore(engine), ProcessStore(engine), ProcessClaims(engine)
    tenant, agent = _agent(engine)
    zombie = nodes.register("zombie", 0.3, None, {})
    pid = store.create(tenant, agent, "find a lamp", owner=zombie).pid
    store.set_state(pid, "running", expect={"ready"}, owner=zombie)
    store.append(pid, "model_request", {"messages": 2}, owner=zombie)
    time.sleep(0.5)  # the zombie's lease ends: nothing it writes as that epoch commits
    with pytest.raises(NotOwner):
        store.append(pid, "model_response", {"message": {}}, StepUsage(5, 5, 1), owner=zombie)
    with pytest.raises(NotOwner):
        store.set_state(pid, "done", result="late", owner=zombie)
    # Nor once it rejoined under a newer epoch: the process is not that epoch's.
    rejoined = nodes.reregister(zombie, 30, {})
    assert rejoined is not None
    with pytest.raises(NotOwner):
        store.append(pid, "model_response", {"message": {}}, owner=rejoined)
    taker = nodes.register("taker", 30, None, {})
    assert claims.claim_one(pid, taker) is not None
    with pytest.raises(NotOwner):  # a live server's write is refused too: the process is not its
        store.append(pid, "model_response", {"message": {}}, owner=rejoined)
    record = store.append(pid, "model_response", {"message": {}}, StepUsage(5, 5, 1), owner=taker)
    assert record.steps == 2 and record.prompt_tokens == 5
    assert [s.kind for s in store.journal(pid)] == ["model_request", "model_response"]
    # A person's signal is no owner's write: it lands whoever owns the process; the owner sees it.
    assert store.set_state(pid, "suspended", reason="paused").state == "suspended"
    done = store.set_state(pid, "running", expect={"suspended"})
    assert store.set_state(done.pid, "done", result="ok", owner=taker).state == "done"


def test_processes_usage_across_servers_comes_from_the_ledger(engine: Engine) -> None:
    now = 1_000_000_000_000_000
    rows = [
        ("a", 1, "p-1", 100, now - 1_000_000),  # just now, from one server
        ("b", 1, "p-2", 300, now - 2_000_000),  # just now, from another
        ("c", 2, "p-3", 400, now - 60_000_000),  # one half-life ago
        ("d", 2, None, 10_000, now - 1_000_000),  # not a process's call: not counted
        ("e", 3, "p-4", 500, now - 3_600_000_000),  # an hour ago: faded out
    ]
    with engine.begin() as conn:
        for row_id, tenant, pid, tokens, at in rows:
            values = {
                "id": row_id,
                "created_at_us": at,
                "tenant_id": tenant,
                "process_id": pid,
                "endpoint": "chat",
                "model": "mock",
                "status": "ok",
                "prompt_tokens": tokens,
                "completion_tokens": 0,
            }
            conn.execute(insert(LedgerEntry).values(values))
    used = process_usage(engine, 60.0, now)
    assert set(used) == {1, 2}
    assert 380 < used[1] <= 400 and 190 < used[2] < 210


def test_a_claimer_skips_a_process_whose_step_is_being_written(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: there is no row being written to skip")
    nodes, store, claims = ClusterStore(engine), ProcessStore(engine), ProcessClaims(engine)
    tenant, agent = _agent(engine)
    gone = nodes.register("gone", 0.2, None, {})
    busy, idle = (store.create(tenant, agent, name, owner=gone).pid for name in ("busy", "idle"))
    taker = nodes.register("taker", 30, None, {})
    time.sleep(0.4)
    with engine.connect() as writing:
        # A step's UPDATE holds its process's row to the commit: the claimer neither waits nor takes it.
        writing.execute(text("UPDATE processes SET updated_at_us = 1 WHERE pid = :pid"), {"pid": busy})
        began = time.monotonic()
        assert [p.pid for p in claims.claim(taker)] == [idle]
        assert time.monotonic() - began < 2
        writing.commit()
    assert [p.pid for p in claims.claim(taker)] == [busy]
