"""The process store on SQLite and on a real PostgreSQL: states, the step journal, counters, and
what an ended process refuses."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, text

from aigrid.spec import AgentSpec
from aigrid.store.accounts import AccountError, AccountStore
from aigrid.store.agents import AgentStore, StoredSpec
from aigrid.store.processes import ProcessStore, StepUsage


@pytest.fixture
def setup(engine: Engine) -> tuple[ProcessStore, int, StoredSpec]:
    tenant = AccountStore(engine).ensure_tenant("acme")
    spec = AgentSpec.model_validate({"name": "shopper", "instructions": "Buy.", "priority": "background"})
    stored, _ = AgentStore(engine).save(tenant, spec)
    return ProcessStore(engine), tenant, stored


def test_a_new_process_is_ready_with_its_agent_version(setup: tuple[ProcessStore, int, StoredSpec]) -> None:
    store, tenant, agent = setup
    proc = store.create(tenant, agent, "find a lamp")
    assert (proc.state, proc.agent, proc.agent_version, proc.priority) == (
        "ready",
        "shopper",
        1,
        "background",
    )
    assert store.get(proc.pid, tenant) == proc
    assert proc.pid.startswith("p-") and not proc.finished


def test_steps_are_numbered_in_order_and_add_their_usage(setup: tuple[ProcessStore, int, StoredSpec]) -> None:
    store, tenant, agent = setup
    pid = store.create(tenant, agent, "find a lamp").pid
    store.append(pid, "model_request", {"messages": 2})
    store.append(pid, "model_response", {"content": "calling"}, StepUsage(100, 20, 7))
    store.append(pid, "tool_call", {"tool": "shop.search", "key": f"{pid}:3"})
    store.append(pid, "tool_result", {"ok": True}, StepUsage(0, 0, 1))
    steps = store.journal(pid)
    assert [(s.seq, s.kind) for s in steps] == [
        (1, "model_request"),
        (2, "model_response"),
        (3, "tool_call"),
        (4, "tool_result"),
    ]
    assert steps[2].payload == {"tool": "shop.search", "key": f"{pid}:3"}
    assert [s.seq for s in store.journal(pid, after=2)] == [3, 4]
    proc = store.get(pid)
    assert (proc.steps, proc.prompt_tokens, proc.completion_tokens, proc.cost_micro) == (4, 100, 20, 8)


def test_states_move_and_an_ended_process_changes_no_more(
    setup: tuple[ProcessStore, int, StoredSpec],
) -> None:
    store, tenant, agent = setup
    pid = store.create(tenant, agent, "x").pid
    store.set_state(pid, "running", expect={"ready"})
    with pytest.raises(AccountError) as info:
        store.set_state(pid, "running", expect={"ready"})
    assert info.value.status == 409, "a compare-and-set loses when another worker moved it first"
    store.set_state(pid, "suspended", reason="budget spent")
    assert store.get(pid).reason == "budget spent"
    done = store.set_state(pid, "done", result="a lamp for 12.50")
    assert done.finished and done.result == "a lamp for 12.50" and done.reason is None
    for change in (lambda: store.set_state(pid, "running"), lambda: store.append(pid, "note", {})):
        with pytest.raises(AccountError) as info:
            change()
        assert info.value.status == 409


def test_listing_unfinished_and_tenants_apart(setup: tuple[ProcessStore, int, StoredSpec]) -> None:
    store, tenant, agent = setup
    first = store.create(tenant, agent, "one").pid
    second = store.create(tenant, agent, "two").pid
    store.set_state(first, "killed", reason="by the owner")
    assert [p.pid for p in store.unfinished()] == [second]
    assert {p.pid for p in store.find(tenant)} == {first, second}
    assert [p.pid for p in store.find(tenant, states={"killed"})] == [first]
    assert store.find(tenant + 1) == []
    with pytest.raises(AccountError) as info:
        store.get(first, tenant + 1)
    assert info.value.status == 404


def test_unknown_processes_kinds_and_states_are_refused(setup: tuple[ProcessStore, int, StoredSpec]) -> None:
    store, tenant, agent = setup
    pid = store.create(tenant, agent, "x").pid
    with pytest.raises(AccountError):
        store.get("p-nope")
    with pytest.raises(ValueError, match="step kind"):
        store.append(pid, "dance", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="process state"):
        store.set_state(pid, "asleep")  # type: ignore[arg-type]


def test_a_step_can_end_the_process_but_a_signal_stands_over_it(
    setup: tuple[ProcessStore, int, StoredSpec],
) -> None:
    store, tenant, agent = setup
    pid = store.create(tenant, agent, "x").pid
    store.set_state(pid, "running")
    done = store.append(
        pid, "model_request", {}, after=[("model_response", {"message": {}})], state="done", result="A lamp."
    )
    assert (done.state, done.result, done.steps) == ("done", "A lamp.", 2)
    paused = store.create(tenant, agent, "y").pid
    store.set_state(paused, "suspended", reason="paused by a signal")
    kept = store.append(paused, "model_response", {"message": {}}, state="done", result="too late")
    assert (kept.state, kept.result, kept.steps) == ("suspended", None, 1), "journaled, but still paused"


def test_a_step_whose_seq_is_taken_is_refused_as_two_workers_at_once(
    setup: tuple[ProcessStore, int, StoredSpec], engine: Engine
) -> None:
    store, tenant, agent = setup
    pid = store.create(tenant, agent, "x").pid
    store.set_state(pid, "running")
    # What another worker's write looks like to this one: the next seq already journaled.
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO process_journal (pid, seq, kind, payload, created_at_us) "
                "VALUES (:pid, 1, 'note', '{}', 0)"
            ),
            {"pid": pid},
        )
    with pytest.raises(AccountError) as info:
        store.append(pid, "note", {"n": 1})
    assert info.value.status == 409 and "two workers" in info.value.message
    assert store.get(pid).steps == 0, "the refused step left the counters as they were"


def test_threads_share_one_store_without_losing_a_step(setup: tuple[ProcessStore, int, StoredSpec]) -> None:
    store, tenant, agent = setup
    pids = [store.create(tenant, agent, f"job {i}").pid for i in range(8)]
    for pid in pids:
        store.set_state(pid, "running")

    def work(pid: str) -> None:
        for n in range(40):
            store.append(pid, "note", {"n": n}, StepUsage(1, 1, 0))
            assert store.get(pid).steps == n + 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, pids))
    for pid in pids:
        assert [s.payload["n"] for s in store.journal(pid)] == list(range(40))
        assert store.get(pid).prompt_tokens == 40
