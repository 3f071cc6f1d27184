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
from aigrid.entry.mending import mended
from aigrid.entry.plan import CallStep, Item, Plan, PlanError, PlanFault, matches, rating_asked
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
    # The count is said away from the item, so code cannot tell it is the pans' (test_plan_mending).
    planned = await plan_for("Buy the cheapest pans, 3 of them", model, MockWorld())
    assert len(model.asked) == 2
    told = model.asked[1][-1]["content"]
    assert told.startswith(UNKEPT_PREFIX) and "the request says 3" in told and "it writes 4" in told
    assert model.asked[1][-2] == {"role": "assistant", "content": answer(buying("pan", "pan", 4))}
    assert planned.plan.steps[2].args["quantity"] == 3
    assert planned.reading == Reading({}, [])


async def test_plans_drawn_at_a_temperature_replace_one_that_does_not_keep_to_the_request() -> None:
    model = ScriptedModel(answer(buying("pan", "pan", 4)))
    redraw = ScriptedModel(answer(buying("kettle", "kettle", 3)), answer(buying("pan", "pan", 3)))
    planned = await plan_for("Buy the cheapest pans, 3 of them", model, MockWorld(), redraw)
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
    wrong["steps"][2]["args"]["sku"] = "$pick.code"
    world = MockWorld({'"$s2.code"': PlanFault("the chosen item has no field 'code'")})
    model = ScriptedModel(answer(wrong), answer(buying("pan", "pan", 1)))
    planned = await plan_for("Buy 1 pan", model, world)
    assert model.asked[1][-1]["content"].startswith(f"{RETRY_PREFIX} the chosen item has no field 'code'")
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
    wrong["steps"][2]["args"]["sku"] = "$pick.code"
    world = MockWorld({'"$s2.code"': PlanFault("the chosen item has no field 'code'")})
    two = ScriptedModel(answer(buying("pan", "pan", 2)))
    with pytest.raises(PlanFault, match="has no field 'code'"):
        await plan_for("Order pans, three of them", ScriptedModel(answer(wrong)), world, two)
    assert len(two.asked) == REDRAWS, "2 pans for 'three' would be offered for the user to buy"


# What code mends before the plan is judged (aigrid.entry.mending): no model is asked again.

MENU = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
FOOD_ORDER = {
    "type": "object",
    "properties": {"restaurant_id": {"type": "string"}, "items": {"type": "array"}},
    "required": ["restaurant_id", "items"],
}
FOOD = Catalog(
    {o.name: o for o in [_operation("food", "menu", MENU), _operation("food", "order", FOOD_ORDER, True)]},
    None,
)


def dishes(*lines: tuple[str, int]) -> Plan:
    """A food plan: the menu, one choice a dish, one order of them all."""
    steps: list[dict[str, Any]] = [{"id": "m", "call": "food.menu", "args": {"city": "Hangzhou"}}]
    for n, (dish, _) in enumerate(lines):
        steps.append({"id": f"d{n}", "choose": "first", "from": ["m"], "where": "any", "match": dish})
    items = [{"item": f"$d{n}.item", "quantity": q} for n, (_, q) in enumerate(lines)]
    steps.append({"id": "o", "call": "food.order", "args": {"restaurant_id": "R03", "items": items}})
    return _plan({"steps": steps})


def ordered(plan: Plan) -> list[int]:
    step = plan.steps[-1]
    assert isinstance(step, CallStep)
    return [line["quantity"] for line in step.args["items"]]


def test_each_quantity_is_the_count_the_request_says_for_its_item() -> None:
    plan = dishes(("bbq pork buns", 2), ("egg tarts", 2))
    said = "Order 2 BBQ Pork Buns and 3 Egg Tarts from Jade Garden"
    assert ordered(mended(said, plan, FOOD, [])) == [2, 3]
    assert ordered(mended("Send me a Crab Fried Rice", dishes(("crab fried rice", 2)), FOOD, [])) == [1]
    assert ordered(mended("Two bowls of wonton noodles", dishes(("wonton noodles", 4)), FOOD, [])) == [2]
    assert ordered(mended("3 x BBQ Pork Buns", dishes(("bbq pork buns", 1)), FOOD, [])) == [3]
    assert ordered(mended("Beef noodle soup, please", dishes(("beef noodle soup", 3)), FOOD, [])) == [1]
    unsure = "Egg tarts for the 4 of us"
    assert ordered(mended(unsure, dishes(("egg tarts", 2)), FOOD, [])) == [2], (
        "a number not said for the item"
    )
    assert mended("3 x BBQ Pork Buns", plan, FOOD, []) is not plan
    same = dishes(("bbq pork buns", 3))
    assert mended("3 x BBQ Pork Buns", same, FOOD, []) is same, "nothing to mend: the plan itself"


async def test_an_order_that_takes_a_field_from_the_search_takes_it_from_the_choice() -> None:
    wrong = buying("pan", "pan", 1)
    wrong["steps"][2]["args"]["sku"] = "$s.sku"
    world = MockWorld({'"$s1.sku"': PlanFault("the result of 's1' has no field 'sku'")})
    model = ScriptedModel(answer(wrong))
    planned = await plan_for("Buy 1 pan", model, world)
    assert len(model.asked) == 1 and planned.plan.steps[2].args["sku"] == "$s2.sku"
    assert orjson.loads(planned.answer)["steps"]["3"]["args"]["sku"] == "$2.sku", (
        "the mended plan, as written"
    )


async def test_a_request_to_buy_whose_plan_stops_at_the_choice_orders_like_its_example() -> None:
    example = PlanExample("Buy 2 kettles, the cheapest", buying("kettle", "kettle", 2))
    stops = buying("tidal earbuds", "tidal earbuds", 1)
    stops["steps"] = stops["steps"][:2]
    model = ScriptedModel(answer(stops))
    planned = await Planner(model, _recall(example)).plan(
        1, "alice", "Get me 3 Tidal earbuds, wherever cheapest", CATALOG, TODAY, MockWorld()
    )
    assert [s.id for s in planned.plan.steps] == ["s1", "s2", "act1"]
    assert planned.plan.steps[2].args == {"sku": "$s2.sku", "quantity": 3}
    asking = "Which shop has the Tidal earbuds cheapest? Don't buy them."
    assert mended(asking, _plan(stops), CATALOG, [example]).steps == _plan(stops).steps


def _recall(*examples: PlanExample) -> Any:
    async def recall(tenant_id: int, text: str) -> list[PlanExample]:
        return list(examples)

    return recall


async def test_a_search_that_finds_nothing_is_tried_again_in_plainer_words() -> None:
    world = MockWorld({w: PlanError("nothing was found at north") for w in ("mice", "with")})
    model = ScriptedModel(answer(buying("kestrel m3 wireless mice", "kestrel m3 wireless mice", 2)))
    planned = await plan_for("Order 2 Kestrel M3 wireless mice", model, world)
    assert planned.plan.steps[0].args["query"] == "kestrel m3 wireless mouse"
    assert planned.plan.steps[1].match == "kestrel m3 wireless mouse"
    model = ScriptedModel(answer(buying("nimbus laptop with 16gb", "nimbus laptop with 16gb", 1)))
    planned = await plan_for("A Nimbus laptop with 16GB", model, world)
    assert planned.plan.steps[0].args["query"] == "nimbus laptop 16gb", "the filler word goes"
    hopeless = MockWorld({"query": PlanError("nothing was found at north")})
    with pytest.raises(TurnedDown, match="nothing was found"):
        await plan_for(
            "Buy a Nimbus 16 laptop", ScriptedModel(answer(buying("nimbus 16 laptop", "", 1))), hopeless
        )
    assert len(hopeless.rehearsed) == 1, "no word that names the thing is dropped: no Nimbus 14 instead"


def test_numbers_that_are_sizes_prices_dates_or_nights_are_no_counts() -> None:
    shoes = dishes(("summit running shoes", 3))
    assert ordered(mended("Summit running shoes in size 42, under 300 yuan", shoes, FOOD, [])) == [1]
    assert ordered(mended("Summit running shoes for December 6", shoes, FOOD, [])) == [1]
    assert ordered(mended("Summit running shoes, 3 of them", shoes, FOOD, [])) == [3], (
        "a count: left as written"
    )


class RatedWorld(MockWorld):
    """Test double of the rehearsal whose choice picks a 3-star hotel, and that has no 4-star one."""

    async def __call__(self, plan: Plan) -> Reading:
        await super().__call__(plan)
        return Reading({"s2": Item("north", {"sku": "H1", "name": "Pine Inn", "stars": 3}, {})}, [])


async def test_a_rating_the_request_asks_for_is_asked_of_the_choice() -> None:
    world = RatedWorld({"4-star": PlanError("nothing found matches '4-star' at north")})
    model = ScriptedModel(answer(buying("hotel", "", 1)))
    with pytest.raises(TurnedDown, match="4-star") as refused:
        await plan_for("Book a 4-star hotel", model, world)
    assert refused.value.planned.plan.steps[1].match == "4-star"
    planned = await plan_for("Book a hotel", ScriptedModel(answer(buying("hotel", "", 1))), RatedWorld())
    assert planned.plan.steps[1].match == "", "no rating asked"


def test_a_choice_matches_a_rating_by_the_items_stars() -> None:
    hotel = Item("travel", {"name": "Lotus Inn", "stars": 4}, {})
    assert matches(hotel, "4-star") and matches(hotel, "lotus 4 stars") and not matches(hotel, "5-star")
    assert not matches(Item("shop", {"name": "4-star review pen"}, {}), "4-star"), "stars need a rating field"
    assert rating_asked("a 4-star hotel") == 4 and rating_asked("a 30L bag") is None


class StockedWorld(MockWorld):
    """Test double of the rehearsal whose choice (step s3) picks a product with a sku."""

    async def __call__(self, plan: Plan) -> Reading:
        await super().__call__(plan)
        product = Item("north", {"sku": "P7", "name": "Summit Running Shoes Size 42", "price_cents": 9}, {})
        return Reading({"s3": product}, [])


def _stops_at_choice(words: str) -> str:
    stops = buying(words, words, 1)
    stops["steps"] = [
        stops["steps"][0],
        stops["steps"][0] | {"id": "t"},
        stops["steps"][1] | {"from": ["s", "t"]},
    ]
    return answer(stops)


async def test_a_request_to_buy_gets_the_order_its_chosen_item_can_be_ordered_with() -> None:
    said = "I need Summit Running Shoes in size 42. Get me the cheapest pair."
    planned = await plan_for(
        said, ScriptedModel(_stops_at_choice("summit running shoes size 42")), StockedWorld()
    )
    assert planned.plan.steps[-1].model_dump() == {
        "id": "act1",
        "call": "north.create_order",
        "args": {"sku": "$s3.sku", "quantity": 1},
        "after": [],
    }, "42 is the shoes' size, not a count"
    two = await plan_for(
        "Get me 2 Summit shoes", ScriptedModel(_stops_at_choice("summit shoes")), StockedWorld()
    )
    assert two.plan.steps[-1].args == {"sku": "$s3.sku", "quantity": 2}
    for asking in ("Which shop has Summit shoes cheapest?", "Find Summit shoes but don't buy them"):
        only = await plan_for(asking, ScriptedModel(_stops_at_choice("summit shoes")), StockedWorld())
        assert len(only.plan.steps) == 3, asking


def test_requests_to_act_are_told_from_questions_on_the_training_sentences() -> None:
    from aigrid.entry.mending import asks_to_act
    from aigrid.learn.suites import training

    told = {(str(t["kind"]) == "info", asks_to_act(str(t["input"]))) for t in training("entry")}
    assert told == {(True, False), (False, True)}, "every question only asks, every other sentence acts"
    assert asks_to_act("Find the Atlas backpack and buy it. I'd rather not pay more than 320 yuan.")
    assert not asks_to_act("Don't order it, but tell me where the Kestrel mouse is cheapest.")
    assert not asks_to_act("Before I decide, which shop is cheaper for the Lumen monitor? No order yet.")
    assert asks_to_act("Can you buy me 2 x Orchid Smartphone 256GB? Whichever shop is cheaper.")
