"""The conversation sent to the model stays inside its context; the journal keeps everything."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.kernel.doubles import KernelDB, ScriptedModelMock, answer, call

from aigrid.kernel.context import estimate_tokens, fit


def conversation(turns: int, result_chars: int = 300) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "Shop."},
        {"role": "user", "content": "find a lamp"},
    ]
    for i in range(turns):
        messages.append(call("shop.search", {"q": f"lamp {i}"}, f"c{i}"))
        messages.append(
            {"role": "tool", "tool_call_id": f"c{i}", "content": f"result {i} " + "x" * result_chars}
        )
    return messages


def test_a_short_conversation_is_sent_as_it_is() -> None:
    messages = conversation(2)
    assert fit(messages, 8192, []) is messages


def test_older_turns_are_dropped_whole_and_the_instructions_say_so() -> None:
    messages = conversation(40)
    kept = fit(messages, 2048, [])
    assert estimate_tokens(kept) <= 2048 * 0.75
    assert kept[1] == messages[1], "the input always stays"
    assert kept[-1] == messages[-1] and kept[-2] == messages[-2], "the newest turn stays whole"
    assert kept[2]["role"] == "assistant", "a tool result never loses the call it answers"
    dropped = (len(messages) - len(kept)) // 2
    assert f"{dropped} earlier turn(s)" in str(kept[0]["content"])


def test_a_newest_turn_too_long_alone_has_its_results_cut() -> None:
    messages = conversation(1, result_chars=40_000)
    kept = fit(messages, 4096, [])
    assert estimate_tokens(kept) <= 4096 * 0.75
    assert "[cut to fit the context" in str(kept[-1]["content"])


def test_tool_schemas_count_against_the_context() -> None:
    messages = conversation(6)
    tools = [{"type": "function", "function": {"name": "t", "description": "d" * 3000}}]
    assert len(fit(messages, 2048, tools)) < len(fit(messages, 2048, []))


@pytest.mark.asyncio
async def test_a_long_running_process_keeps_its_prompt_inside_the_context(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    script = [call("shop.search", {"q": "lamp"}, f"c{i}") for i in range(30)] + [answer("done")]
    model = ScriptedModelMock(*script, context=1024)
    runner, pid = db.start(model, tools=["shop.*"], max_steps=40, memory=False)
    assert (await runner.run(pid)).state == "done"
    assert max(estimate_tokens(r["messages"]) + estimate_tokens(r["tools"]) for r in model.requests) <= 768
    assert len([s for s in db.processes.journal(pid) if s.kind == "tool_result"]) == 30, (
        "the journal keeps all"
    )
