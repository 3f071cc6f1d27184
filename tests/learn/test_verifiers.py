"""The verifiers judge outcomes as a careful person would, so nothing learns from a guess."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aigrid.entry.reading import Purchase
from aigrid.kernel.compiler import Draft, readable
from aigrid.learn.evals import comparison, wilson
from aigrid.learn.verifiers import (
    arguments_problem,
    compiler_verdict,
    entry_verdict,
    journaled_call_problem,
    tool_call_verdict,
)
from aigrid.spec import AgentSpec
from aigrid.store.evals import EvalResult, EvalRun

EARBUDS = {"kind": "purchase", "expect": [{"service": "lakeside", "item": "LS-2000", "quantity": 2}]}


def order(seller: str = "lakeside", sku: str = "LS-2000", quantity: int = 2, amount: int = 55800) -> Purchase:
    args = {"sku": sku, "quantity": quantity}
    return Purchase(f"{seller}.create_order", args, seller, "Aurora X2", quantity, amount)


def test_an_entry_passes_only_when_it_buys_what_was_asked_from_whom() -> None:
    assert entry_verdict(EARBUDS, [order()], None, 100_000).passed
    wrong_shop = entry_verdict(EARBUDS, [order(seller="northwind")], None, 100_000)
    assert not wrong_shop.passed and "from northwind" in wrong_shop.reason
    assert not entry_verdict(EARBUDS, [order(quantity=1)], None, 100_000).passed
    assert not entry_verdict(EARBUDS, [order(sku="LS-2001")], None, 100_000).passed
    assert not entry_verdict(EARBUDS, [order(), order()], None, 100_000).passed, "twice is not once"
    nothing = entry_verdict(EARBUDS, [], None, 100_000)
    assert not nothing.passed and nothing.reason == "the plan buys nothing"
    refused = entry_verdict(EARBUDS, None, "two steps are called 'a'", 100_000)
    assert not refused.passed and "two steps" in refused.reason
    poor = entry_verdict(EARBUDS, [order()], None, 1000)
    assert not poor.passed and "wallet would refuse" in poor.reason
    assert EARBUDS and entry_verdict(EARBUDS, [order()], None, 100_000).checks == {
        "buy_or_book": True,
        "all": True,
    }


def test_a_task_that_must_buy_nothing_passes_when_nothing_could_be_bought() -> None:
    info = {"kind": "info", "expect": []}
    assert entry_verdict(info, [], None, 100_000).passed
    assert entry_verdict(info, None, "nothing found matches 'unicorn'", 100_000).passed
    bought = entry_verdict(info, [order()], None, 100_000)
    assert not bought.passed and "it must buy nothing" in bought.reason
    assert bought.checks == {"must_buy_nothing": False, "all": False}
    insufficient = {"kind": "insufficient", "expect": []}
    assert entry_verdict(insufficient, [order(amount=90_000)], None, 50_000).passed, "the wallet refuses it"
    assert not entry_verdict(insufficient, [order(amount=90_000)], None, 100_000).passed


def test_food_and_hotel_purchases_are_matched_by_their_dishes_and_nights() -> None:
    food = {
        "kind": "food",
        "expect": [
            {
                "service": "food",
                "item": "R01",
                "quantity": 1,
                "items": [{"item": "Beef Noodle Soup", "quantity": 2}],
            }
        ],
    }
    args: dict[str, Any] = {"restaurant_id": "R01", "items": [{"item": "beef noodle soup", "quantity": 2}]}
    assert entry_verdict(food, [Purchase("food.order", args, "food", "x", 2, 6100)], None, None).passed
    args["items"][0]["quantity"] = 1
    assert not entry_verdict(food, [Purchase("food.order", args, "food", "x", 1, 3300)], None, None).passed
    hotel = {"kind": "booking", "expect": [{"service": "travel", "item": "H07", "quantity": 1, "nights": 2}]}
    booked = {"kind": "hotel", "item_id": "H07", "nights": 2}
    assert entry_verdict(hotel, [Purchase("travel.book", booked, "travel", "x", 2, 64000)], None, None).passed
    booked["nights"] = 3
    assert not entry_verdict(
        hotel, [Purchase("travel.book", booked, "travel", "x", 3, 96000)], None, None
    ).passed


def _draft(**fields: Any) -> Draft:
    spec = AgentSpec.model_validate({"name": "watch", "instructions": "watch", **fields})
    return Draft(spec, readable(spec), ())


def test_a_compile_is_judged_by_its_tools_trigger_and_validity() -> None:
    case = {
        "description": "every day at 8 tell me the weather",
        "timezone": "Asia/Shanghai",
        "tools": ["weather.forecast", "notify.owner"],
        "trigger": {"kind": "cron", "cron": "0 8 * * *"},
    }
    names = {"weather.forecast", "notify.owner", "mail.send"}
    right = _draft(
        tools=["weather.forecast", "notify.owner"],
        triggers=[{"kind": "cron", "cron": "0 8 * * *", "timezone": "Asia/Shanghai"}],
    )
    assert compiler_verdict(case, right, None, names).checks == {
        "right_tools": True,
        "right_trigger": True,
        "valid": True,
        "all": True,
    }
    extra = compiler_verdict(
        case, _draft(tools=["weather.forecast", "notify.owner", "mail.send"]), None, names
    )
    assert extra.checks["right_tools"] is False and "+mail.send" in extra.reason
    assert "trigger none" in extra.reason
    unknown = compiler_verdict(case, _draft(tools=["weather.forecast", "x.y"]), None, names)
    assert not unknown.passed and unknown.checks["valid"] is False and "unknown tools" in unknown.reason
    refused = compiler_verdict({"description": "?!", "error": True}, None, "too little to go on", names)
    assert refused.passed and refused.checks == {"valid": True, "all": True}
    assert not compiler_verdict({"description": "?!", "error": True}, right, None, names).passed


def test_a_tool_call_must_name_the_tool_validate_and_carry_what_was_said() -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    }
    task = {"expect": {"name": "weather.forecast", "arguments": {"city": "Hangzhou"}}}
    schemas = {"weather.forecast": schema}
    assert tool_call_verdict(
        task, {"name": "weather.forecast", "arguments": {"city": "hangzhou"}}, schemas
    ).passed
    wrong = tool_call_verdict(task, {"name": "news.search", "arguments": {}}, schemas)
    assert wrong.checks == {"right_tool": False, "valid_arguments": False, "all": False}
    invalid = tool_call_verdict(task, {"name": "weather.forecast", "arguments": {"days": "three"}}, schemas)
    assert not invalid.passed and invalid.checks["right_tool"] is True
    assert "city" in invalid.reason or "days" in invalid.reason
    other_city = tool_call_verdict(
        task, {"name": "weather.forecast", "arguments": {"city": "Beijing"}}, schemas
    )
    assert not other_city.passed and "want 'Hangzhou'" in other_city.reason
    assert not tool_call_verdict(task, None, schemas).passed
    assert arguments_problem({"city": 3}, schema) == "city: 3 is not of type 'string'"
    assert (
        journaled_call_problem({"city": "x"}, schema, "boom", ok=False)
        == "the tool answered with an error: boom"
    )
    assert journaled_call_problem({"city": "x"}, schema, "sunny", ok=True) is None


def test_pass_rates_carry_wilson_intervals_and_comparisons_say_when_runs_differ() -> None:
    low, high = wilson(0, 26)
    assert low == 0.0 and 0.12 < high < 0.14
    low, high = wilson(20, 26)
    assert 0.57 < low < 0.59 and 0.88 < high < 0.91
    assert wilson(0, 0) == (0.0, 1.0)
    now = int(datetime(2026, 12, 7).timestamp() * 1_000_000)

    def run(run_id: str, passed: int) -> EvalRun:
        return EvalRun(
            run_id,
            1,
            "entry",
            "heldout",
            "local",
            run_id == "b",
            "done",
            26,
            26,
            {"all": [passed, 26]},
            None,
            now,
            now,
        )

    a_results = [EvalResult("t1", False, {}, "", 1.0), EvalResult("t2", True, {}, "", 1.0)]
    b_results = [EvalResult("t1", True, {}, "", 1.0), EvalResult("t2", True, {}, "", 1.0)]
    compared = comparison(
        run(
            "a",
            2,
        ),
        run("b", 20),
        a_results,
        b_results,
    )
    (metric,) = compared["metrics"]
    assert metric["significant"] is True and metric["difference"] == round(18 / 26, 4)
    assert compared["tasks"] == [{"task": "t1", "a": False, "b": True}]
    close = comparison(run("a", 12), run("b", 14), a_results, b_results)
    assert close["metrics"][0]["significant"] is False, "two points apart on 26 tasks is noise"
