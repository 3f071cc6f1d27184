"""Steps and reads from the event loop (``aappend``, ``aget``) on SQLite and on a real PostgreSQL.

On PostgreSQL the steps and reads of many processes that arrive together go in one statement;
each must still come out as it would alone: its own journal order, its own counters, its own
refusal.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Engine, text

from aigrid.spec import AgentSpec
from aigrid.store.accounts import AccountError, AccountStore
from aigrid.store.agents import AgentStore, StoredSpec
from aigrid.store.cluster import ClusterStore
from aigrid.store.processes import NotOwner, ProcessRecord, ProcessStore, StepUsage


def _agent(engine: Engine) -> tuple[int, StoredSpec]:
    tenant = AccountStore(engine).ensure_tenant("acme")
    spec = AgentSpec.model_validate({"name": "shopper", "instructions": "Buy."})
    stored, _ = AgentStore(engine).save(tenant, spec)
    return tenant, stored


def _running(store: ProcessStore, engine: Engine, count: int, **create: Any) -> list[str]:
    tenant, agent = _agent(engine)
    pids = [store.create(tenant, agent, f"job {i}", **create).pid for i in range(count)]
    for pid in pids:
        store.set_state(pid, "running")
    return pids


def _batch_sizes(store: ProcessStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batches the store sends from now on (none on SQLite, which sends each)."""
    sizes: list[int] = []
    batches = store._batches
    sent = batches._run_batch

    async def counted(items: list[Any]) -> Any:
        sizes.append(len(items))
        return await sent(items)

    monkeypatch.setattr(batches, "_run_batch", counted)
    return sizes


async def test_many_processes_stepping_at_once_each_keep_their_own_journal(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ProcessStore(engine)
    pids = _running(store, engine, 24)
    sizes = _batch_sizes(store, monkeypatch)

    async def work(pid: str) -> None:
        for n in range(6):
            before = await store.aget(pid)
            after = await store.aappend(
                pid, "model_request", {"n": n}, StepUsage(3, 1, 2), after=[("model_response", {"n": n})]
            )
            assert after.steps == before.steps + 2 == 2 * (n + 1)

    await asyncio.gather(*(work(pid) for pid in pids))
    for pid in pids:
        assert [(s.seq, s.payload["n"]) for s in store.journal(pid)] == [(i + 1, i // 2) for i in range(12)]
        record = store.get(pid)
        assert (record.prompt_tokens, record.completion_tokens, record.cost_micro) == (18, 6, 12)
    if engine.dialect.name == "postgresql":
        assert sum(sizes) == 24 * 6 * 2 and max(sizes) > 1, "steps arriving together went together"
        assert len(sizes) < 24 * 6 * 2


async def test_a_step_the_database_refuses_is_refused_alone(engine: Engine) -> None:
    nodes, store = ClusterStore(engine), ProcessStore(engine)
    me, other = nodes.register("me", 30, None, {}), nodes.register("other", 30, None, {})
    mine = _running(store, engine, 3, owner=me)
    theirs = _running(store, engine, 1, owner=other)[0]
    ended, taken = mine[1], mine[2]
    store.set_state(ended, "killed", reason="a signal")
    with engine.begin() as conn:  # another worker's step: the next seq of `taken` is journaled
        conn.execute(
            text(
                "INSERT INTO process_journal (pid, seq, kind, payload, created_at_us) "
                "VALUES (:p, 1, 'note', '{}', 0)"
            ),
            {"p": taken},
        )

    def step(pid: str) -> Any:
        return store.aappend(pid, "note", {"pid": pid}, StepUsage(1, 0, 0), owner=me)

    outcomes = await asyncio.gather(
        step(mine[0]),
        step(ended),
        step(taken),
        step(theirs),
        step("p-nothing"),
        store.aget(theirs),
        store.aget("p-none"),
        return_exceptions=True,
    )
    written, was_ended, was_taken, not_mine, no_such, read, not_read = outcomes
    assert isinstance(written, ProcessRecord) and written.steps == 1 and written.prompt_tokens == 1
    assert isinstance(was_ended, AccountError) and "has ended" in was_ended.message
    assert isinstance(was_taken, AccountError) and "two workers" in was_taken.message
    assert isinstance(not_mine, NotOwner)
    assert isinstance(no_such, AccountError) and no_such.status == 404
    assert isinstance(read, ProcessRecord) and read.pid == theirs and read.steps == 0
    assert isinstance(not_read, AccountError) and not_read.status == 404
    assert [s.payload for s in store.journal(mine[0])] == [{"pid": mine[0]}]
    for pid in (ended, taken, theirs):
        assert store.get(pid).steps == 0 and store.get(pid).prompt_tokens == 0, "nothing of theirs written"


async def test_two_steps_of_one_process_at_once_are_written_one_after_the_other(engine: Engine) -> None:
    store = ProcessStore(engine)
    (pid,) = _running(store, engine, 1)
    first, second = await asyncio.gather(
        store.aappend(pid, "note", {"n": 1}), store.aappend(pid, "note", {"n": 2})
    )
    assert sorted([first.steps, second.steps]) == [1, 2]
    assert [s.payload["n"] for s in store.journal(pid)] == [1, 2]


async def test_a_step_that_ends_the_process_and_a_signal_that_stands_over_it(engine: Engine) -> None:
    store = ProcessStore(engine)
    done, paused = _running(store, engine, 2)
    store.set_state(paused, "suspended", reason="paused by a signal")
    ended, kept = await asyncio.gather(
        store.aappend(done, "model_response", {"message": {}}, state="done", result="A lamp."),
        store.aappend(paused, "model_response", {"message": {}}, state="done", result="too late"),
    )
    assert (ended.state, ended.result, ended.steps) == ("done", "A lamp.", 1)
    assert (kept.state, kept.result, kept.steps) == ("suspended", None, 1), "journaled, but still paused"


async def test_a_caller_cancelled_before_its_batch_left_writes_nothing(engine: Engine) -> None:
    store = ProcessStore(engine)
    first, second = _running(store, engine, 2)
    sent = asyncio.create_task(store.aappend(first, "note", {}))
    dropped = asyncio.create_task(store.aappend(second, "note", {}))
    await asyncio.sleep(0)  # both wait for a batch (SQLite wrote them already)
    dropped.cancel()
    await asyncio.gather(sent, dropped, return_exceptions=True)
    assert store.get(first).steps == 1
    assert store.get(second).steps == (1 if engine.dialect.name == "sqlite" else 0)
