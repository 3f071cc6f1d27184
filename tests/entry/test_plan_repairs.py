"""How the planner sends a plan back: what fails for a fault of its own, or leaves out the request.

A small model copies its worked example's numbers and dishes into a plan that checks and runs. The
planner rehearses each plan (its read-only steps) and asks again, with the reason, when the plan
does not keep to the request; a plan that keeps to it and that the world turns down is the answer.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
import pytest

from aigrid.entry.catalog import Catalog, Operation
from aigrid.entry.grounding import unkept
from aigrid.entry.plan import Plan, PlanError, PlanFault
from aigrid.entry.planner import (
    REDRAWS,
    RETRY_PREFIX,
    UNKEPT_PREFIX,
    PlanExample,
    Planner,
    TurnedDown,
    to_written,
)
from aigrid.entry.reading import Reading
from aigrid.kernel.tools import CallContext, Tool

TODAY = date(2026, 12, 1)


async def _no_call(arguments: dict[str, Any], context: CallContext) -> None:
    raise AssertionError("not called")


def _operation(service: str, op: str, parameters: dict[str, Any], changes_world: bool = False) -> Operation:
    tool = Tool(f"{service}.{op}", f"{op} at {service}", _no_call, parameters)
    undo = "cancel_order" if changes_world else None
    return Operation(service, "shop", op, tool, parameters, changes_world, undo, True, changes_world)


SEARCH = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
ORDER = {
    "type": "object",
    "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
    "required": ["sku", "quantity"],
}
OPERATIONS = [_operation("north", "search", SEARCH), _operation("north", "create_order", ORDER, True)]
CATALOG = Catalog({o.name: o for o in OPERATIONS}, None)


def buying(query: str, match: str, quantity: int) -> dict[str, Any]:
    """A plan in its own form: search, choose, order."""
    return {
        "steps": [
            {"id": "s", "call": "north.search", "args": {"query": query}},
            {"id": "pick", "choose": "cheapest", "from": ["s"], "where": "available", "match": match},
            {"id": "buy", "call": "north.create_order", "args": {"sku": "$pick.sku", "quantity": quantity}},
        ]
    }


def answer(plan: dict[str, Any]) -> str:
    return orjson.dumps(to_written(plan)).decode()


class ScriptedModel:
    """Test double of the planner's model: answers from a script, keeps every conversation it saw."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[list[dict[str, Any]]] = []

    async def __call__(self, tenant_id: int, messages: list[dict[str, Any]], schema: dict[str, Any]) -> str:
        self.asked.append(messages)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class MockWorld:
    """Test double of the rehearsal: refuses what ``refuse`` says of a plan, else finds nothing to buy."""

    def __init__(self, refuse: dict[str, PlanError] | None = None) -> None:
        self.refuse = refuse or {}
        self.rehearsed: list[Plan] = []

    async def __call__(self, plan: Plan) -> Reading:
        self.rehearsed.append(plan)
        for word, error in self.refuse.items():
            if word in plan.model_dump_json():
                raise error
        return Reading({}, [])


async def plan_for(
    text: str, model: ScriptedModel, world: MockWorld | None, redraw: ScriptedModel | None = None
) -> Any:
    return await Planner(model, None, redraw).plan(1, "alice", text, CATALOG, TODAY, world)


async def test_a_plan_that_leaves_out_a_number_the_request_says_goes_back_with_it() -> None:
    model = ScriptedModel(answer(buying("pan", "pan", 4)), answer(buying("pan", "pan", 3)))
    planned = await plan_for("Buy 3 pans, the cheapest", model, MockWorld())
    assert len(model.asked) == 2
    told = model.asked[1][-1]["content"]
    assert told.startswith(UNKEPT_PREFIX) and "the request says 3" in told and "it writes 4" in told
    assert model.asked[1][-2] == {"role": "assistant", "content": answer(buying("pan", "pan", 4))}
    assert planned.plan.steps[2].args["quantity"] == 3
    assert planned.reading == Reading({}, [])


async def test_plans_drawn_at_a_temperature_replace_one_that_does_not_keep_to_the_request() -> None:
    model = ScriptedModel(answer(buying("pan", "pan", 4)))
    redraw = ScriptedModel(answer(buying("kettle", "kettle", 3)), answer(buying("pan", "pan", 3)))
    planned = await plan_for("Buy 3 pans, the cheapest", model, MockWorld(), redraw)
    assert len(model.asked) == 1 and len(redraw.asked) == REDRAWS
    assert all(m == model.asked[0] for m in redraw.asked), "drawn from the same prompt"
    assert planned.plan.steps[1].match == "pan" and planned.plan.steps[2].args["quantity"] == 3


async def test_when_no_plan_keeps_to_the_request_the_first_that_ran_is_taken() -> None:
    copied = answer(buying("kettle", "kettle", 1))
    model, redraw = ScriptedModel(copied), ScriptedModel(answer(buying("kettle", "kettle", 2)))
    planned = await plan_for("Buy 1 pan, the cheapest", model, MockWorld(), redraw)
    assert "looks for 'kettle'" in str(unkept("Buy 1 pan", planned.plan, CATALOG, []))
    assert planned.answer == copied and planned.messages == model.asked[0], "the first plan, as it ran"


async def test_a_plan_that_fails_for_a_fault_of_its_own_is_replaced_by_one_that_holds() -> None:
    wrong = buying("pan", "pan", 1)
    wrong["steps"][2]["args"]["sku"] = "$s.sku"
    world = MockWorld({'"$s1.sku"': PlanFault("the result of 's1' has no field 'sku'")})
    model = ScriptedModel(answer(wrong), answer(buying("pan", "pan", 1)))
    planned = await plan_for("Buy 1 pan", model, world)
    assert model.asked[1][-1]["content"].startswith(f"{RETRY_PREFIX} the result of 's1' has no field 'sku'")
    assert planned.plan.steps[2].args["sku"] == "$s2.sku", "the choice's sku (steps are s1, s2, ...)"
    assert len(world.rehearsed) == 2


async def test_a_plan_that_keeps_to_the_request_and_that_the_world_turns_down_is_the_answer() -> None:
    model = ScriptedModel(answer(buying("pan", "pan", 1)))
    redraw = ScriptedModel(answer(buying("pot", "pot", 1)))
    world = MockWorld({"pan": PlanError("nothing found matches 'pan' at north")})
    with pytest.raises(TurnedDown, match="nothing found matches 'pan'") as refused:
        await plan_for("Buy 1 pan", model, world, redraw)
    assert redraw.asked == [], "drawn again, the model could only find something else to buy"
    assert refused.value.planned.answer == answer(buying("pan", "pan", 1))


async def test_a_turned_down_plan_that_looks_for_something_unasked_is_replaced() -> None:
    model = ScriptedModel(answer(buying("kettle", "kettle", 1)))
    redraw = ScriptedModel(answer(buying("pan", "pan", 1)))
    world = MockWorld({"kettle": PlanError("nothing found matches 'kettle' at north")})
    planned = await plan_for("Buy 1 pan", model, world, redraw)
    assert planned.plan.steps[1].match == "pan"


async def test_a_plan_that_never_checks_is_refused_with_its_reason() -> None:
    model, redraw = ScriptedModel("not json"), ScriptedModel("[]")
    with pytest.raises(PlanError, match="not JSON") as refused:
        await plan_for("Buy 1 pan", model, MockWorld(), redraw)
    assert not isinstance(refused.value, TurnedDown)
    assert len(redraw.asked) == REDRAWS


async def test_without_a_rehearsal_only_what_does_not_check_goes_back_once() -> None:
    model = ScriptedModel("{", answer(buying("kettle", "kettle", 4)))
    planned = await plan_for("Buy 3 pans", model, None, ScriptedModel("{"))
    assert len(model.asked) == 2 and planned.reading is None
    assert planned.plan.steps[1].match == "kettle", "no rehearsal: the plan is not judged against the request"


def _plan(raw: dict[str, Any]) -> Plan:
    return Plan.model_validate(raw)


def test_numbers_count_where_the_plan_writes_them_and_only_a_plan_that_acts_must_use_them() -> None:
    assert (
        unkept("Order 15 Atlas Backpack 30L", _plan(buying("atlas backpack 30l", "atlas", 15)), CATALOG, [])
        == []
    )
    in_query = buying("summit shoes size 42", "summit shoes", 1)
    assert unkept("Buy Summit Shoes in size 42", _plan(in_query), CATALOG, []) == []
    no_size = buying("summit shoes", "summit shoes", 1)
    assert unkept("Buy Summit Shoes in size 42", _plan(no_size), CATALOG, []) == [
        "the request says 42, and no step uses it"
    ]
    answers_only = {"steps": buying("pan", "pan", 1)["steps"][:2]}
    assert unkept("What do 3 pans cost?", _plan(answers_only), CATALOG, []) == []
    assert unkept("Buy two pans", _plan(buying("pan", "pan", 1)), CATALOG, []) == [], "words are not counted"


def test_a_choice_may_use_the_words_the_examples_choices_used_unsaid_and_plurals_match() -> None:
    nearest = buying("dumplings", "cantonese", 2)
    assert unkept("Buy 2 dumplings", _plan(nearest), CATALOG, []) != []
    example = PlanExample("Buy 1 egg tart at the closest dim sum place", buying("egg tart", "cantonese", 1))
    assert unkept("Buy 2 dumplings", _plan(nearest), CATALOG, [example]) == []
    plural = buying("noodles", "noodles", 2)
    assert unkept("Buy 2 bowls from the noodle place", _plan(plural), CATALOG, []) == []


def test_a_number_the_plan_writes_must_be_said_in_digits_or_words() -> None:
    copied = buying("fried rice", "fried rice", 2)
    assert unkept("Send me a fried rice", _plan(copied), CATALOG, []) == [
        "it writes 2, a number the request never says"
    ]
    assert unkept("Send me two fried rice", _plan(copied), CATALOG, []) == []
    assert unkept("Buy a 4-star pan", _plan(buying("pan", "pan", 4)), CATALOG, []) == [
        "it writes 4, a number the request never says"
    ], "a 4-star hotel is not 4 of anything"


def test_a_plan_that_acts_unlike_every_example_shown_goes_back() -> None:
    buys = PlanExample("Buy 1 kettle", buying("kettle", "kettle", 1))
    asks = PlanExample("What does a kettle cost?", {"steps": buying("kettle", "kettle", 1)["steps"][:2]})
    stops = _plan({"steps": buying("pan", "pan", 1)["steps"][:2]})
    assert unkept("Get me a pan", stops, CATALOG, [buys, buys]) == [
        "it stops at a choice, while requests like this one go on to order or book it"
    ]
    assert unkept("Get me a pan", stops, CATALOG, [buys, asks]) == [], "the examples disagree"
    assert unkept("A pan, how much?", _plan(buying("pan", "pan", 1)), CATALOG, [asks]) == [
        "it orders or books, while requests like this one only ask"
    ]


async def test_a_drawn_plan_that_does_not_keep_to_the_request_never_replaces_a_refusal() -> None:
    wrong = buying("pan", "pan", 3)
    wrong["steps"][2]["args"]["sku"] = "$s.sku"
    world = MockWorld({'"$s1.sku"': PlanFault("the result of 's1' has no field 'sku'")})
    two = ScriptedModel(answer(buying("pan", "pan", 2)))
    with pytest.raises(PlanFault, match="has no field 'sku'"):
        await plan_for("Order three pans", ScriptedModel(answer(wrong)), world, two)
    assert len(two.asked) == REDRAWS, "2 pans for 'three' would be offered for the user to buy"
