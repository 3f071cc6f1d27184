"""The form the model writes plans in: numbered steps whose references can only look back.

The grammar is the JSON schema ``plan_schema`` builds, so what it admits is checked here with a
JSON-schema validator: a plan with a forward reference, or two steps with one number, is not an
answer the model can write. (``tests/entry/test_entry_embedded.py`` checks that llama.cpp takes
the schema as a grammar.)
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from aigrid.entry.catalog import Catalog, Operation
from aigrid.entry.plan import PlanError
from aigrid.entry.planner import (
    WRITTEN_STEPS,
    PlanExample,
    checked_written,
    from_written,
    plan_schema,
    prompt,
    to_written,
    usable_examples,
)
from aigrid.kernel.tools import CallContext, Tool


async def _no_call(arguments: dict[str, Any], context: CallContext) -> None:
    raise AssertionError("not called")


def _operation(service: str, op: str, parameters: dict[str, Any], changes_world: bool = False) -> Operation:
    return Operation(
        service,
        "shop",
        op,
        Tool(f"{service}.{op}", f"{op} at {service}", _no_call, parameters),
        parameters,
        changes_world,
        "cancel_order" if changes_world else None,
        True,
        changes_world,
    )


SEARCH = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
ORDER = {
    "type": "object",
    "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
    "required": ["sku", "quantity"],
}
OPERATIONS = [
    _operation("north", "search", SEARCH),
    _operation("lake", "search", SEARCH),
    _operation("north", "create_order", ORDER, changes_world=True),
]
CATALOG = Catalog({o.name: o for o in OPERATIONS}, None)
PLAN = {
    "steps": [
        {"id": "a", "call": "north.search", "args": {"query": "pan"}},
        {"id": "b", "call": "lake.search", "args": {"query": "pan"}},
        {"id": "pick", "choose": "cheapest", "from": ["a", "b"], "where": "available", "match": "pan"},
        {"id": "buy", "call": "north.create_order", "args": {"sku": "$pick.sku", "quantity": 2}},
    ]
}


def admits(answer: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(answer, plan_schema(OPERATIONS))
    except jsonschema.ValidationError:
        return False
    return True


def test_a_plan_is_written_numbered_and_read_back_in_its_own_form() -> None:
    written = to_written(PLAN)
    assert written == {
        "steps": {
            "1": {"call": "north.search", "args": {"query": "pan"}},
            "2": {"call": "lake.search", "args": {"query": "pan"}},
            "3": {"choose": "cheapest", "from": [1, 2], "where": "available", "match": "pan"},
            "4": {"call": "north.create_order", "args": {"sku": "$3.sku", "quantity": 2}},
        }
    }
    assert admits(written)
    back = from_written(written)
    assert [s["id"] for s in back["steps"]] == ["s1", "s2", "s3", "s4"]
    assert back["steps"][2]["from"] == ["s1", "s2"]
    assert back["steps"][3]["args"] == {"sku": "$s3.sku", "quantity": 2}


def test_the_grammar_admits_no_reference_to_a_later_step_or_itself() -> None:
    forward = to_written(PLAN)
    forward["steps"]["1"]["args"]["query"] = "$3.name"
    assert not admits(forward), "not even in a string argument, which is otherwise free text"
    forward["steps"]["1"]["args"]["query"] = 'pan\\" , "$3.name'
    assert not admits(forward), "no escape smuggles one in"
    backward = to_written(PLAN)
    backward["steps"]["4"]["args"]["sku"] = "$1.sku"
    assert admits(backward), "any earlier step may be referred to"
    ahead = to_written(PLAN)
    ahead["steps"]["2"] = {"call": "north.create_order", "args": {"sku": "x", "quantity": "$3.quantity"}}
    assert not admits(ahead), "step 2 may refer only to step 1"
    itself = to_written(PLAN)
    itself["steps"]["3"]["from"] = [1, 3]
    assert not admits(itself), "a choice chooses among earlier steps only"
    first = {"steps": {"1": {"choose": "first", "from": [1], "where": "any", "match": ""}}}
    assert not admits(first), "the first step has nothing to choose from"


def test_steps_cannot_share_a_number_and_past_the_last_number_nothing_is_written() -> None:
    too_many = {"steps": {str(n): {"call": "north.search", "args": {"query": "x"}} for n in range(1, 10)}}
    assert not admits(too_many), f"at most {WRITTEN_STEPS} steps"
    unknown = {"steps": {"1": {"call": "north.delete_everything", "args": {}}}}
    assert not admits(unknown), "only the operations shown"
    # JSON keeps one value per key: a second "2" replaces the first, so no two steps share an id.
    back = from_written({"steps": {"1": {"call": "north.search", "args": {"query": "x"}}}})
    assert len({s["id"] for s in back["steps"]}) == len(back["steps"])


def test_what_the_model_wrote_is_checked_like_any_plan() -> None:
    good = checked_written('{"steps": ' + _json(to_written(PLAN)["steps"]) + "}", CATALOG)
    assert [type(s).__name__ for s in good.steps] == ["CallStep", "CallStep", "ChooseStep", "CallStep"]
    assert checked_written('{"steps": {}}', CATALOG).steps == [], "a plan of nothing says it cannot be done"
    with pytest.raises(PlanError, match="needs s5"):
        checked_written(
            '{"steps": {"1": {"call": "north.create_order", "args": {"sku": "$5.sku", "quantity": 1}}}}',
            CATALOG,
        )
    with pytest.raises(PlanError, match="not JSON"):
        checked_written("{steps", CATALOG)
    with pytest.raises(PlanError, match="lacks the arguments"):
        checked_written('{"steps": {"1": {"call": "north.search", "args": {}}}}', CATALOG)


def test_worked_examples_become_earlier_turns_and_only_usable_ones_are_shown() -> None:
    from datetime import date

    gone = PlanExample("buy a kettle at a shop that closed", {"steps": [{"id": "a", "call": "gone.search"}]})
    mine = PlanExample("buy two pans from the cheaper shop", PLAN)
    usable = usable_examples([gone, mine], CATALOG)
    assert usable == [mine], "an example calling a service that is not up is not shown"
    messages = prompt("alice", "buy a pan", OPERATIONS, date(2026, 12, 1), usable)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "Request: buy two pans from the cheaper shop"
    assert '"$3.sku"' in messages[2]["content"], "the example is shown in the form the model writes"
    assert messages[-1]["content"] == "Request: buy a pan"
    assert "north.create_order(sku, quantity)" in messages[0]["content"]
    built_in = prompt("alice", "buy a pan", OPERATIONS, date(2026, 12, 1), [])
    assert "Pebble" in built_in[1]["content"], "with no experience, the built-in example shows the form"


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def test_arguments_the_examples_took_from_their_requests_are_written_in_this_requests_words() -> None:
    from aigrid.entry.grounding import said_in

    example = PlanExample("buy two pans from the cheaper shop", PLAN)
    said = said_in("Buy me a Cedar cast iron pan, cheapest shop!", [example])
    assert said.arguments == {"query", "match"}, "the example's query and match were words of its request"
    assert "Cedar cast iron pan" in said.phrases and "cedar cast iron pan" in said.phrases
    assert "shop!" not in said.phrases and "shop" in said.phrases, "a word's punctuation is not part of it"
    schema = plan_schema(OPERATIONS, said)
    plan = to_written(PLAN)
    plan["steps"]["1"]["args"]["query"] = "cedar cast iron pan"
    plan["steps"]["3"]["match"] = "cast iron pan"
    jsonschema.validate(plan, schema)
    plan["steps"]["2"]["args"]["query"] = "aurora x2 pro earbuds"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(plan, schema)  # words the request never said
    free = PlanExample(
        "get me the thing", {"steps": [{"id": "a", "call": "north.search", "args": {"query": "pan"}}]}
    )
    assert said_in("Buy me a pan", [free]).arguments == frozenset(), "that example's query was not its words"
