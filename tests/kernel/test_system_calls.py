"""The built-in system calls: memory, notes to the owner, messages to agents and child processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.kernel.doubles import AgentScriptsMock, KernelDB, ScriptedModelMock, answer, call
from tests.kernel.test_kernel import until_finished

from aigrid.kernel.runner import Runner
from aigrid.store.memory import TENANT_WIDE

pytestmark = pytest.mark.asyncio


def last_tool_result(model: ScriptedModelMock, request: int = -1) -> str:
    return str(model.requests[request]["messages"][-1]["content"])


async def test_memory_written_by_one_process_is_found_by_the_next(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    model = ScriptedModelMock(
        call("memory.write", {"text": "The customer likes brass lamps.", "key": "taste"}),
        answer("noted"),
        call("memory__search", {"query": "what lamps does the customer like"}),
        call("memory.read", {"key": "taste"}, "c2"),
        answer("brass"),
    )
    runner, first = db.start(model)
    assert (await runner.run(first)).state == "done"
    second = db.processes.create(db.tenant, db.agents.get(db.tenant, "shopper"), "what lamp?").pid
    assert (await runner.run(second)).result == "brass"
    assert "brass lamps" in last_tool_result(model, 3), "search found the memory by its words"
    assert "brass lamps" in last_tool_result(model, 4), "read found it by its key"
    kept = db.memory.read(db.tenant, ["shopper"], "taste")
    assert kept is not None and kept.agent == "shopper"


async def test_shared_memory_is_seen_by_every_agent_of_the_tenant(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    model = ScriptedModelMock(
        call("memory.write", {"text": "Ship everything to Berlin.", "shared": True}), answer("ok")
    )
    runner, pid = db.start(model)
    await runner.run(pid)
    (shared,) = db.memory.search(db.tenant, "ship", ["writer", TENANT_WIDE])
    assert shared.agent == TENANT_WIDE


async def test_memory_off_refuses_the_memory_tools_and_does_not_offer_them(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    model = ScriptedModelMock(call("memory.write", {"text": "secret"}), answer("ok"))
    runner, pid = db.start(model, memory=False, tools=["*"])
    await runner.run(pid)
    offered = {t["function"]["name"] for t in model.requests[0]["tools"]}
    assert not any(name.startswith("memory") for name in offered)
    assert last_tool_result(model).startswith("refused")
    assert db.memory.recent(db.tenant) == []


async def test_a_bad_memory_call_tells_the_model_why(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    model = ScriptedModelMock(call("memory.search", {"query": "x", "limit": 500}), answer("ok"))
    runner, pid = db.start(model)
    await runner.run(pid)
    assert "limit" in last_tool_result(model) and last_tool_result(model).startswith("error")


async def test_notify_owner_leaves_a_message_in_the_tenants_inbox(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    model = ScriptedModelMock(call("notify.owner", {"text": "The lamp is back in stock."}), answer("ok"))
    runner, pid = db.start(model, tools=["notify.owner"])
    await runner.run(pid)
    (note,) = db.messages.messages(db.tenant)
    assert (note.text, note.pid, note.agent) == ("The lamp is back in stock.", pid, "shopper")
    assert db.messages.messages(db.tenant + 1) == []


async def test_a_spawned_child_runs_while_its_parent_sleeps_and_its_answer_wakes_the_parent(
    tmp_path: Path,
) -> None:
    db = KernelDB(tmp_path)
    db.save(name="boss", tools=["process.spawn"])
    db.save(name="helper", tools=["shop.*"])
    model = AgentScriptsMock(
        boss=[call("process.spawn", {"agent": "helper", "input": "price of a lamp?"}), answer("12.50 it is")],
        helper=[call("shop.search", {"q": "lamp"}), answer("The lamp costs 12.50.")],
    )
    kernel = db.kernel(model)
    await kernel.start()
    try:
        boss = await kernel.spawn(db.tenant, "boss", "buy a lamp")
        (done,) = await until_finished(db, [boss.pid])
        (child,) = db.processes.children(boss.pid)
    finally:
        await kernel.close()
    assert done.result == "12.50 it is" and child.result == "The lamp costs 12.50."
    result = [s for s in db.processes.journal(boss.pid) if s.kind == "tool_result"]
    assert len(result) == 1 and "The lamp costs 12.50." in result[0].payload["content"]
    assert child.parent_pid == boss.pid


async def test_a_sleeping_parent_whose_child_ended_during_a_crash_wakes_at_restart(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    db.save(name="boss", tools=["process.spawn"])
    db.save(name="helper")
    scripts = AgentScriptsMock(
        boss=[call("process.spawn", {"agent": "helper", "input": "hi"})], helper=[answer("hello")]
    )
    kernel = db.kernel(scripts)  # not started: the child waits in the scheduler
    boss = db.processes.create(db.tenant, db.agents.get(db.tenant, "boss"), "go")
    db.processes.set_state(boss.pid, "running")
    runner = Runner(scripts, db.processes, db.agents, db.tools)
    assert (await runner.step(boss.pid)).state == "sleeping"  # the model asked for a child, and boss waits
    (child,) = db.processes.children(boss.pid)
    await Runner(scripts, db.processes, db.agents, db.tools).run(
        child.pid
    )  # ends with no kernel to wake boss
    await kernel.close()
    scripts.scripts["boss"] = [answer("it said hello")]
    restarted = db.kernel(scripts)
    await restarted.start()
    try:
        (done,) = await until_finished(db, [boss.pid])
    finally:
        await restarted.close()
    assert done.result == "it said hello"
    assert len(db.processes.children(boss.pid)) == 1, "the retried call found its child, not a new one"


async def test_killing_a_parent_kills_its_children(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    db.save(name="boss", tools=["process.spawn"])
    db.save(name="helper", tools=["shop.*"])
    scripts = AgentScriptsMock(
        boss=[call("process.spawn", {"agent": "helper", "input": "search"})],
        helper=[call("shop.search", {"q": "hang"})],
    )
    kernel = db.kernel(scripts)
    await kernel.start()
    try:
        boss = await kernel.spawn(db.tenant, "boss", "go")
        async with asyncio.timeout(10):
            while True:  # polled as a client would watch
                if db.processes.children(boss.pid):
                    break
                await asyncio.sleep(0.01)
        await kernel.signal(boss.pid, db.tenant, "kill")
        (child,) = db.processes.children(boss.pid)
    finally:
        await kernel.close()
    assert db.processes.get(child.pid).state == "killed"


async def test_spawning_an_unknown_agent_or_too_deep_is_an_error_for_the_model(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    db.save(name="loop", tools=["process.spawn"])
    spawn_self = call("process.spawn", {"agent": "loop", "input": "again"})
    scripts = AgentScriptsMock(
        loop=[spawn_self] * 6 + [answer("bottom")] + [answer("up")] * 5,
    )
    kernel = db.kernel(scripts)
    await kernel.start()
    try:
        top = await kernel.spawn(db.tenant, "loop", "go")
        (done,) = await until_finished(db, [top.pid])
        ghost = db.save(name="caller", tools=["process.spawn"])
        scripts.scripts["caller"] = [call("process.spawn", {"agent": "ghost", "input": "x"}), answer("ok")]
        caller = await kernel.spawn(db.tenant, ghost.spec.name, "go")
        await until_finished(db, [caller.pid])
    finally:
        await kernel.close()
    assert done.state == "done"
    depths = [s for s in scripts.requests if "nest" in str(s["messages"][-1].get("content"))]
    assert depths, "the sixth level was refused with the depth limit"
    assert "No agent named 'ghost'" in str(scripts.requests[-1]["messages"][-1]["content"])


async def test_agent_message_starts_the_other_agent_and_returns_at_once(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    db.save(name="sender", tools=["agent.message"])
    db.save(name="inbox", triggers=[{"kind": "message", "from_agents": ["send*"]}])
    scripts = AgentScriptsMock(
        sender=[call("agent.message", {"agent": "inbox", "text": "restock lamps"}), answer("sent")],
        inbox=[answer("restocking")],
    )
    kernel = db.kernel(scripts)
    await kernel.start()
    try:
        sender = await kernel.spawn(db.tenant, "sender", "go")
        (done,) = await until_finished(db, [sender.pid])
        (received,) = [p for p in db.processes.find(db.tenant) if p.agent == "inbox"]
        (received,) = await until_finished(db, [received.pid])
    finally:
        await kernel.close()
    assert done.result == "sent" and received.result == "restocking"
    assert "restock lamps" in received.input and "sender" in received.input
    assert received.parent_pid is None, "a message is not a child: the sender does not wait for it"
    assert received.origin == "message"


async def test_an_agent_without_a_message_trigger_for_the_sender_refuses_its_message(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    db.save(name="sender", tools=["agent.message"])
    db.save(name="private", triggers=[{"kind": "message", "from_agents": ["boss"]}])
    db.save(name="closed")
    scripts = AgentScriptsMock(
        sender=[
            call("agent.message", {"agent": "private", "text": "hi"}),
            call("agent.message", {"agent": "closed", "text": "hi"}, "c2"),
            answer("nobody listened"),
        ]
    )
    kernel = db.kernel(scripts)
    await kernel.start()
    try:
        (done,) = await until_finished(db, [(await kernel.spawn(db.tenant, "sender", "go")).pid])
    finally:
        await kernel.close()
    results = [s.payload["content"] for s in db.processes.journal(done.pid) if s.kind == "tool_result"]
    assert all("takes no messages from agent 'sender'" in r for r in results) and len(results) == 2
    assert [p.agent for p in db.processes.find(db.tenant)] == ["sender"]
