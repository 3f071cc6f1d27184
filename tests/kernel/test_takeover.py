"""Kernels of several servers on one database: each steps only what it owns, and takes up orphans."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tests.kernel.doubles import KernelDB, ReactiveModelMock, answer

from aigrid.kernel.kernel import Kernel
from aigrid.kernel.scheduler import FairScheduler
from aigrid.store.cluster import ClusterStore, Owner
from aigrid.store.process_claims import ProcessClaims
from aigrid.store.processes import ProcessRecord, StepUsage

pytestmark = pytest.mark.asyncio


def _server(db: KernelDB, owner: list[Owner], model: ReactiveModelMock) -> Kernel:
    # owner is a one-item list, so a test can move the server to a new epoch.
    return db.kernel(model, owner=lambda: owner[0], claims=ProcessClaims(db.engine), poll_s=0.05)


async def _settle(db: KernelDB, pids: list[str], timeout_s: float = 10.0) -> list[ProcessRecord]:
    # The kernels change the database; polling it is how a client would watch too.
    async with asyncio.timeout(timeout_s):
        while True:
            records = [db.processes.get(p) for p in pids]
            if all(r.finished for r in records):
                return records
            await asyncio.sleep(0.02)


async def test_a_server_takes_up_a_dead_peers_processes_and_leaves_a_live_peers(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    stored = db.save()
    nodes = ClusterStore(db.engine)
    dead = nodes.register("dead", 0.2, None, {})
    peer = nodes.register("peer", 30, None, {})
    me = nodes.register("me", 30, None, {})
    orphans = [db.processes.create(db.tenant, stored, f"job {i}", owner=dead).pid for i in range(5)]
    peers = db.processes.create(db.tenant, stored, "the peer's", owner=peer).pid
    model = ReactiveModelMock(lambda messages: answer("done"))
    kernel = _server(db, [me], model)
    await kernel.start()
    try:
        records = await _settle(db, orphans)  # taken up once the dead lease ends
        await asyncio.sleep(0.2)
    finally:
        await kernel.close()
    assert all(r.state == "done" and r.owner_node_id == me.node_id for r in records)
    assert all(
        [s.kind for s in db.processes.journal(p)] == ["model_request", "model_response"] for p in orphans
    )
    assert db.processes.get(peers).state == "ready" and db.processes.journal(peers) == []


async def test_a_resume_sent_to_another_server_is_stepped_by_the_owner(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    db.save()
    nodes = ClusterStore(db.engine)
    a, b = nodes.register("a", 30, None, {}), nodes.register("b", 30, None, {})
    stepped_by: list[str] = []

    def respond(name: str) -> ReactiveModelMock:
        def answering(messages: list[dict[str, object]]) -> dict[str, object]:
            stepped_by.append(name)
            return answer(f"done by {name}")

        return ReactiveModelMock(answering)

    server_a, server_b = _server(db, [a], respond("a")), _server(db, [b], respond("b"))
    process = await server_a.spawn(db.tenant, "shopper", "a")  # not started: it waits in a's queue
    await server_a.signal(process.pid, db.tenant, "pause")
    await server_b.start()
    await server_a.start()
    try:
        assert (await server_b.signal(process.pid, db.tenant, "resume")).state == "running"
        (record,) = await _settle(db, [process.pid])
    finally:
        await server_a.close()
        await server_b.close()
    assert record.result == "done by a" and stepped_by == ["a"]


async def test_a_server_whose_epoch_lost_its_lease_commits_nothing_and_takes_its_work_back(
    tmp_path: Path,
) -> None:
    db = KernelDB(tmp_path)
    db.save()
    nodes = ClusterStore(db.engine)
    owner = [nodes.register("zombie", 0.3, None, {})]
    gate = asyncio.Event()
    calls: list[int] = []
    asked = asyncio.Event()

    async def chat(process: ProcessRecord, body: dict[str, object]) -> tuple[dict[str, object], StepUsage]:
        calls.append(owner[0].epoch)
        asked.set()
        await gate.wait()
        return answer(f"epoch {owner[0].epoch}"), StepUsage()

    model = ReactiveModelMock(lambda messages: answer("unused"))
    model.chat = chat  # type: ignore[method-assign]
    kernel = _server(db, owner, model)
    await kernel.start()
    try:
        pid = (await kernel.spawn(db.tenant, "shopper", "a")).pid
        await asyncio.wait_for(asked.wait(), 5)
        time.sleep(0.4)  # noqa: ASYNC251 - the whole server stops past its lease, its event loop too
        rejoined = nodes.reregister(owner[0], 30, {})
        assert rejoined is not None
        owner[0] = rejoined
        gate.set()  # the step begun under the old epoch answers: its journal write is refused
        (record,) = await _settle(db, [pid])
    finally:
        await kernel.close()
    # The new epoch took the process up again and stepped it once; the old epoch wrote nothing.
    assert calls == [1, 2] and record.result == "epoch 2" and record.owner_epoch == 2
    assert [s.kind for s in db.processes.journal(pid)] == ["model_request", "model_response"]


async def test_a_resume_for_a_dead_owners_process_is_claimed_and_stepped_at_once(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    stored = db.save()
    nodes = ClusterStore(db.engine)
    dying = nodes.register("dying", 0.5, None, {})
    me = nodes.register("me", 30, None, {})
    pid = db.processes.create(db.tenant, stored, "paused on a server about to die", owner=dying).pid
    db.processes.set_state(pid, "suspended", reason="paused by a signal")
    kernel = db.kernel(
        ReactiveModelMock(lambda messages: answer("done")),
        owner=lambda: me,
        claims=ProcessClaims(db.engine),
        poll_s=3600,  # no poll: the resume itself takes the process over
    )
    await kernel.start()  # its owner is live yet: not taken up
    try:
        assert db.processes.get(pid).owner_node_id == dying.node_id
        await asyncio.sleep(0.6)  # now its owner's lease has ended
        await kernel.signal(pid, db.tenant, "resume")
        (record,) = await _settle(db, [pid], timeout_s=5)
    finally:
        await kernel.close()
    assert record.state == "done" and record.owner_node_id == me.node_id


async def test_the_kernel_feeds_its_scheduler_what_tenants_used_across_the_cluster(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    scheduler = FairScheduler()
    seen = asyncio.Event()

    def usage() -> dict[int, float]:
        seen.set()
        return {db.tenant: 5000.0}

    kernel = db.kernel(ReactiveModelMock(lambda messages: answer("done")), scheduler=scheduler, usage=usage)
    await kernel.start()
    try:
        await asyncio.wait_for(seen.wait(), 5)
        await asyncio.sleep(0.05)
    finally:
        await kernel.close()
    assert scheduler.share(db.tenant) > 4000
