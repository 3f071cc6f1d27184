"""The kernel: many processes stepped to the end, signals, failures, and recovery after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.kernel.doubles import KernelDB, ReactiveModelMock, ScriptedModelMock, answer, call

from aigrid.kernel.kernel import Kernel
from aigrid.kernel.runner import Runner
from aigrid.kernel.scheduler import FairScheduler
from aigrid.store.accounts import AccountError
from aigrid.store.processes import ProcessRecord, StepUsage

pytestmark = pytest.mark.asyncio


async def until_finished(db: KernelDB, pids: list[str], timeout_s: float = 20.0) -> list[ProcessRecord]:
    # The kernel's workers change the database; polling it is how a client would watch too.
    async with asyncio.timeout(timeout_s):
        while True:
            records = [db.processes.get(pid) for pid in pids]
            if all(r.finished for r in records):
                return records
            await asyncio.sleep(0.01)


def kernel_for(db: KernelDB, model: ScriptedModelMock, workers: int = 8) -> Kernel:
    return db.kernel(model, workers)


def save(db: KernelDB, **spec: object) -> None:
    db.save(**spec)


async def test_many_processes_run_to_the_end(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    save(db, tools=["shop.*"])
    model = ReactiveModelMock(
        lambda messages: (
            answer("done") if messages[-1]["role"] == "tool" else call("shop.search", {"q": "lamp"})
        )
    )
    kernel = kernel_for(db, model)
    await kernel.start()
    try:
        pids = [(await kernel.spawn(db.tenant, "shopper", f"job {i}")).pid for i in range(30)]
        records = await until_finished(db, pids)
    finally:
        await kernel.close()
    assert all(r.state == "done" for r in records)
    assert len(db.searches) == 30


async def test_the_kernel_keeps_to_the_tenant_cap_of_the_scheduler_it_is_given(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    save(db)

    class CountingModelMock(ScriptedModelMock):
        def __init__(self) -> None:
            super().__init__()
            self.now = self.most = 0

        async def chat(
            self, process: ProcessRecord, body: dict[str, object]
        ) -> tuple[dict[str, object], StepUsage]:
            self.now += 1
            self.most = max(self.most, self.now)
            await asyncio.sleep(0.02)
            self.now -= 1
            return answer("done"), StepUsage(10, 5, 3)

    model = CountingModelMock()
    # An empty scheduler is falsy (it has a length): the kernel must still use it, not a default.
    kernel = db.kernel(model, workers=8, scheduler=FairScheduler(tenant_cap=2))
    await kernel.start()
    try:
        pids = [(await kernel.spawn(db.tenant, "shopper", f"job {i}")).pid for i in range(6)]
        await until_finished(db, pids)
    finally:
        await kernel.close()
    assert model.most == 2


async def test_signals_pause_resume_and_kill(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    save(db)
    kernel = kernel_for(db, ScriptedModelMock(answer("one"), answer("two")))
    # Not started: spawned processes wait in the scheduler, so signals meet them there.
    paused = await kernel.spawn(db.tenant, "shopper", "a")
    killed = await kernel.spawn(db.tenant, "shopper", "b")
    assert (await kernel.signal(paused.pid, db.tenant, "pause")).state == "suspended"
    assert (await kernel.signal(killed.pid, db.tenant, "kill")).state == "killed"
    with pytest.raises(AccountError) as info:
        await kernel.signal(killed.pid, db.tenant, "resume")
    assert info.value.status == 409
    with pytest.raises(AccountError) as info:
        await kernel.signal(paused.pid, db.tenant + 1, "kill")
    assert info.value.status == 404, "another tenant cannot signal it"
    await kernel.start()
    try:
        await asyncio.sleep(0.1)
        assert db.processes.get(paused.pid).state == "suspended", "a paused process takes no step"
        await kernel.signal(paused.pid, db.tenant, "resume")
        (record,) = await until_finished(db, [paused.pid])
    finally:
        await kernel.close()
    assert record.state == "done" and db.processes.journal(killed.pid) == []


async def test_a_failing_step_fails_its_process_and_the_kernel_goes_on(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    save(db)
    kernel = kernel_for(db, ScriptedModelMock(answer("ok")), workers=1)  # the second call finds no script
    await kernel.start()
    try:
        first = await kernel.spawn(db.tenant, "shopper", "a")
        second = await kernel.spawn(db.tenant, "shopper", "b")
        records = await until_finished(db, [first.pid, second.pid])
    finally:
        await kernel.close()
    assert sorted(r.state for r in records) == ["done", "failed"]
    failed = next(r for r in records if r.state == "failed")
    assert "a step failed" in (failed.reason or "")


async def test_a_step_the_database_did_not_answer_leaves_the_process_to_step_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    psycopg = pytest.importorskip("psycopg")
    db = KernelDB(tmp_path)
    save(db, tools=["shop.*"])
    model = ReactiveModelMock(
        lambda messages: (
            answer("done") if messages[-1]["role"] == "tool" else call("shop.search", {"q": "lamp"})
        )
    )
    kernel = db.kernel(model, workers=2, poll_s=0.05)
    written = db.processes.aappend
    lost: list[str] = []

    async def dropped_once(pid: str, *args: object, **kwargs: object) -> ProcessRecord:
        if not lost:  # the connection drops as the first step's write goes out
            lost.append(pid)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await written(pid, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(db.processes, "aappend", dropped_once)
    await kernel.start()
    try:
        pid = (await kernel.spawn(db.tenant, "shopper", "a lamp")).pid
        (record,) = await until_finished(db, [pid])
    finally:
        await kernel.close()
    assert lost == [pid]
    assert (record.state, record.result) == ("done", "done"), "not failed: it stepped again"


async def test_a_restarted_kernel_goes_on_where_the_journal_ends(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    save(db, tools=["shop.*"])
    first = Runner(ScriptedModelMock(call("shop.search", {"q": "lamp"})), db.processes, db.agents, db.tools)
    stored = db.agents.get(db.tenant, "shopper")
    pid = db.processes.create(db.tenant, stored, "find a lamp").pid
    db.processes.set_state(pid, "running")
    await first.step(pid)  # the model asked for a search, which ran and was journaled; then the server died
    kernel = kernel_for(db, ScriptedModelMock(answer("Found it.")))
    await kernel.start()
    try:
        (record,) = await until_finished(db, [pid])
    finally:
        await kernel.close()
    assert record.result == "Found it." and len(db.searches) == 1


async def test_a_spent_agent_budget_suspends_and_the_kernel_revives_it_when_it_allows(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    save(db, budget={"tokens": 1000, "period": "day"})
    spent = {"tokens": 5000}
    model = ScriptedModelMock(answer("done"))
    runner = Runner(model, db.processes, db.agents, db.tools, lambda _t, _a, _s: (spent["tokens"], 0))
    kernel = Kernel(runner, db.processes, db.agents, revive_s=0.05)
    await kernel.start()
    try:
        pid = (await kernel.spawn(db.tenant, "shopper", "x")).pid
        async with asyncio.timeout(10):
            while db.processes.get(pid).state != "suspended":  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        reason = db.processes.get(pid).reason or ""
        assert reason.startswith("budget: ") and "5000 of its 1000 tokens" in reason
        assert model.requests == [], "no model call over budget"
        spent["tokens"] = 0  # a new day
        (record,) = await until_finished(db, [pid])
    finally:
        await kernel.close()
    assert record.state == "done"


async def until_state(db: KernelDB, pid: str, state: str) -> None:
    async with asyncio.timeout(10):
        while db.processes.get(pid).state != state:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_call_needing_approval_waits_durably_and_runs_once_approved(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    save(db, tools=["shop.*"], approval=["shop.search"])
    kernel = kernel_for(db, ScriptedModelMock(call("shop.search", {"q": "lamp"})))
    await kernel.start()
    pid = (await kernel.spawn(db.tenant, "shopper", "x")).pid
    await until_state(db, pid, "waiting_approval")
    await kernel.close()  # a restart while it waits
    assert db.searches == []
    restarted = kernel_for(db, ScriptedModelMock(answer("Bought.")))
    await restarted.start()
    try:
        (waiting,) = await restarted.approvals(db.tenant)
        assert (waiting.pid, waiting.tool, waiting.agent) == (pid, "shop.search", "shopper")
        assert await restarted.approvals(db.tenant + 1) == []
        with pytest.raises(AccountError) as info:
            await restarted.decide(waiting.id, db.tenant + 1, True)
        assert info.value.status == 404, "another tenant cannot decide"
        await restarted.decide(waiting.id, db.tenant, True)
        with pytest.raises(AccountError) as info:
            await restarted.decide(waiting.id, db.tenant, False)
        assert info.value.status == 409
        (record,) = await until_finished(db, [pid])
    finally:
        await restarted.close()
    assert record.result == "Bought." and len(db.searches) == 1
    assert await restarted.approvals(db.tenant) == []


async def test_a_denied_call_is_refused_and_the_model_hears_it(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    save(db, tools=["shop.*"], approval=["shop.*"])
    model = ScriptedModelMock(call("shop.search", {"q": "lamp"}), answer("I was not allowed."))
    kernel = kernel_for(db, model)
    await kernel.start()
    try:
        pid = (await kernel.spawn(db.tenant, "shopper", "x")).pid
        await until_state(db, pid, "waiting_approval")
        (waiting,) = await kernel.approvals(db.tenant)
        await kernel.decide(waiting.id, db.tenant, False)
        (record,) = await until_finished(db, [pid])
    finally:
        await kernel.close()
    assert record.state == "done" and db.searches == []
    assert "denied" in model.requests[1]["messages"][-1]["content"]
    assert [a.outcome for a in db.processes.audit(pid=pid)] == ["refused"]
    with pytest.raises(AccountError) as info:
        await kernel.decide("p-nope:3", db.tenant, True)
    assert info.value.status == 404
