"""Processes run step by step from their journal: tools, refusals, limits and crash recovery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.kernel.doubles import KernelDB, ScriptedModelMock, answer, call

from aigrid.errors import APIError, insufficient_quota, not_found, rate_limited
from aigrid.kernel.runner import Runner
from aigrid.store.processes import ProcessRecord, StepUsage

pytestmark = pytest.mark.asyncio


async def test_a_plain_answer_ends_the_process(tmp_path: Path) -> None:
    kernel = KernelDB(tmp_path)
    runner, pid = kernel.start(ScriptedModelMock(answer("A lamp.")))
    done = await runner.run(pid)
    assert (done.state, done.result) == ("done", "A lamp.")
    assert [s.kind for s in kernel.processes.journal(pid)] == ["model_request", "model_response"]
    assert (done.prompt_tokens, done.completion_tokens, done.cost_micro) == (10, 5, 3)


async def test_a_granted_tool_runs_and_its_result_goes_back_to_the_model(tmp_path: Path) -> None:
    kernel = KernelDB(tmp_path)
    model = ScriptedModelMock(call("shop.search", {"q": "lamp"}), answer("The lamp costs 12.50."))
    runner, pid = kernel.start(model, tools=["shop.*", "time.now"])
    done = await runner.run(pid)
    assert done.result == "The lamp costs 12.50."
    assert [t["function"]["name"] for t in model.requests[0]["tools"]] == [
        "memory__read",
        "memory__search",
        "memory__write",
        "shop__search",
        "time__now",
    ]
    tool_message = model.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and "lamp" in tool_message["content"]
    assert kernel.searches == [f"{pid}:3"], "the idempotency key is pid:seq of the journaled call"


async def test_one_step_is_a_model_call_and_the_tool_calls_it_asked_for_each_journaled_before_it_runs(
    tmp_path: Path,
) -> None:
    kernel = KernelDB(tmp_path)
    both = call("shop.search", {"q": "lamp"})
    both["tool_calls"].append({**call("shop.search", {"q": "desk"}, "c2")["tool_calls"][0]})
    runner, pid = kernel.start(ScriptedModelMock(both, answer("Both found.")), tools=["shop.*"])
    kernel.processes.set_state(pid, "running")
    after_one = await runner.step(pid)
    assert after_one.state == "running"
    assert [s.kind for s in kernel.processes.journal(pid)] == [
        "model_request",
        "model_response",
        "tool_call",
        "tool_result",
        "tool_call",
        "tool_result",
    ]
    assert kernel.searches == [f"{pid}:3", f"{pid}:5"], "each call ran once, with the seq of its tool_call"
    done = await runner.step(pid)
    assert (done.state, done.result) == ("done", "Both found."), "a final answer ends the process in its step"


async def test_a_pause_during_the_model_call_keeps_its_tool_call_for_the_resume(tmp_path: Path) -> None:
    kernel = KernelDB(tmp_path)

    class PausedWhileThinkingMock(ScriptedModelMock):
        async def chat(
            self, process: ProcessRecord, body: dict[str, Any]
        ) -> tuple[dict[str, Any], StepUsage]:
            if not self.requests:
                kernel.processes.set_state(process.pid, "suspended", reason="paused by a signal")
            return await super().chat(process, body)

    model = PausedWhileThinkingMock(call("shop.search", {"q": "lamp"}), answer("Found it."))
    runner, pid = kernel.start(model, tools=["shop.*"])
    paused = await runner.step(pid)
    assert paused.state == "suspended" and kernel.searches == [], "a paused process runs no tool"
    kernel.processes.set_state(pid, "running", expect={"suspended"})
    done = await runner.run(pid)
    assert done.result == "Found it." and kernel.searches == [f"{pid}:3"]


async def test_workers_taking_turns_on_a_process_each_see_the_others_steps(tmp_path: Path) -> None:
    kernel = KernelDB(tmp_path)
    first = ScriptedModelMock(call("shop.search", {"q": "lamp"}), answer("Done."))
    second = ScriptedModelMock(call("shop.search", {"q": "desk"}, "c2"))
    runner_a, pid = kernel.start(first, tools=["shop.*"])
    runner_b = Runner(second, kernel.processes, kernel.agents, kernel.tools)
    await runner_a.step(pid)
    await runner_b.step(pid)
    done = await runner_a.step(pid)
    assert done.result == "Done."
    sent = first.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert sent[-1]["tool_call_id"] == "c2", "the first worker's second call saw the second worker's turn"


async def test_a_tool_result_cannot_grant_what_the_spec_does_not(tmp_path: Path) -> None:
    kernel = KernelDB(tmp_path)
    model = ScriptedModelMock(
        call("shop.search", {"q": "lamp"}),
        call("bank.transfer", {"to": "mallory", "amount": 1000}, "c2"),
        answer("I could not pay."),
    )
    runner, pid = kernel.start(model, tools=["shop.*"])
    done = await runner.run(pid)
    assert done.state == "done"
    refusal = [s.payload for s in kernel.processes.journal(pid) if s.kind == "tool_result"][-1]
    assert refusal["ok"] is False and refusal["content"].startswith("refused:")
    assert "bank.transfer" not in [t["function"]["name"] for t in model.requests[0]["tools"]]


async def test_failing_and_hanging_tools_answer_the_model_with_an_error(tmp_path: Path) -> None:
    kernel = KernelDB(tmp_path)
    model = ScriptedModelMock(
        call("shop.search", {"q": "boom"}), call("shop.search", {"q": "hang"}, "c2"), answer("Sorry.")
    )
    runner, pid = kernel.start(model, tools=["shop.*"])
    assert (await runner.run(pid)).state == "done"
    results = [s.payload["content"] for s in kernel.processes.journal(pid) if s.kind == "tool_result"]
    assert "the shop is down" in results[0] and "did not answer within" in results[1]


async def test_the_step_limit_fails_the_process(tmp_path: Path) -> None:
    kernel = KernelDB(tmp_path)
    model = ScriptedModelMock(*(call("time.now", {}, f"c{i}") for i in range(3)))
    runner, pid = kernel.start(model, tools=["time.now"], max_steps=2)
    failed = await runner.run(pid)
    assert failed.state == "failed" and "2 steps" in (failed.reason or "")


async def test_a_new_worker_goes_on_from_the_journal_without_repeating_a_finished_call(
    tmp_path: Path,
) -> None:
    kernel = KernelDB(tmp_path)
    first_worker, pid = kernel.start(ScriptedModelMock(call("shop.search", {"q": "lamp"})), tools=["shop.*"])
    # The model asks for the search, which runs and whose result is journaled; then the worker "dies".
    assert (await first_worker.step(pid)).state == "running" and len(kernel.searches) == 1
    model = ScriptedModelMock(answer("Found it."))
    second_worker = Runner(model, kernel.processes, kernel.agents, kernel.tools)
    done = await second_worker.run(pid)
    assert done.result == "Found it." and len(kernel.searches) == 1
    assert model.requests[0]["messages"][-1]["role"] == "tool"


async def test_a_call_cut_off_mid_flight_runs_again_with_the_same_key(tmp_path: Path) -> None:
    kernel = KernelDB(tmp_path)
    runner, pid = kernel.start(ScriptedModelMock(answer("Found it.")), tools=["shop.*"])
    # A crash after the call was journaled and before its result was: the journal ends in tool_call.
    kernel.processes.append(
        pid,
        "model_request",
        {"messages": 2, "tools": 1},
        after=[
            ("model_response", {"message": call("shop.search", {"q": "lamp"})}),
            ("tool_call", {"id": "c1", "tool": "shop.search"}),
        ],
    )
    done = await runner.run(pid)
    assert done.result == "Found it." and kernel.searches == [f"{pid}:3"]


async def test_every_tool_call_is_in_the_audit_log(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    model = ScriptedModelMock(
        call("shop.search", {"q": "lamp"}),
        call("bank.transfer", {"amount": 5}, "c2"),
        call("shop.search", {"q": "boom"}, "c3"),
        answer("done"),
    )
    runner, pid = db.start(model, tools=["shop.*"])
    await runner.run(pid)
    audit = db.processes.audit(pid=pid)
    assert [(a.tool, a.outcome) for a in reversed(audit)] == [
        ("shop.search", "ok"),
        ("bank.transfer", "refused"),
        ("shop.search", "error"),
    ]
    assert all(
        a.tenant_id == db.tenant and a.agent == "shopper" and len(a.arguments_sha256) == 64 for a in audit
    )
    assert db.processes.audit(tenant_id=db.tenant + 1) == []


class RefusingModelMock(ScriptedModelMock):
    """A unit-test grid that refuses the first call with an API error, then answers."""

    def __init__(self, error: APIError, *messages: dict[str, Any]) -> None:
        super().__init__(*messages)
        self.error: APIError | None = error

    async def chat(self, process: ProcessRecord, body: dict[str, Any]) -> tuple[dict[str, Any], StepUsage]:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return await super().chat(process, body)


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (insufficient_quota("Budget reached: 100 tokens per day."), "suspended"),
        (rate_limited("Rate limit reached.", 0.01), "done"),
        (APIError(503, "overloaded", code="overloaded", headers={"Retry-After": "0"}), "done"),
        (not_found("The model 'nope' does not exist.", code="model_not_found"), "failed"),
    ],
)
async def test_a_refused_model_call_suspends_waits_or_fails(
    tmp_path: Path, error: APIError, state: str
) -> None:
    db = KernelDB(tmp_path)
    runner, pid = db.start(RefusingModelMock(error, answer("ok")))
    db.processes.set_state(pid, "running")
    record = await runner.step(pid)
    while record.state == "running":
        record = await runner.step(pid)
    assert record.state == state
    if state == "suspended":
        assert record.reason == "budget: Budget reached: 100 tokens per day."
    if state == "failed":
        assert "404" in (record.reason or "") and "nope" in (record.reason or "")
