"""The choice rules: what is available, in the quantity an order needs, and words singular or plural."""

from __future__ import annotations

import pytest

from aigrid.entry.plan import ChooseStep, Item, PlanError, choose, matches

CHEAP_FEW = Item("lakeside", {"sku": "LS-1", "name": "Pebble Power Bank", "price_cents": 100, "stock": 2}, {})
DEAR_MANY = Item(
    "northwind", {"sku": "NW-1", "name": "Pebble Power Bank", "price_cents": 150, "stock": 9}, {}
)
STEP = ChooseStep.model_validate(
    {"id": "p", "choose": "cheapest", "from": ["a"], "match": "pebble power banks"}
)


def test_the_cheapest_that_has_as_many_as_the_order_takes_is_chosen() -> None:
    assert choose(STEP, [CHEAP_FEW, DEAR_MANY]) is CHEAP_FEW
    assert choose(STEP, [CHEAP_FEW, DEAR_MANY], needed=5) is DEAR_MANY, (
        "two left cannot fill an order of five"
    )
    with pytest.raises(PlanError, match="is available"):
        choose(STEP, [CHEAP_FEW, DEAR_MANY], needed=10)
    anything = ChooseStep.model_validate({"id": "p", "choose": "cheapest", "from": ["a"], "where": "any"})
    assert choose(anything, [CHEAP_FEW, DEAR_MANY], needed=10) is CHEAP_FEW, "'any' asks nothing of stock"


def test_match_words_are_found_singular_or_plural() -> None:
    assert matches(CHEAP_FEW, "pebble power banks") and matches(CHEAP_FEW, "POWER BANK")
    assert not matches(CHEAP_FEW, "pebble kettles")
    box = Item("s", {"name": "Lunch Box", "category": "glassware"}, {})
    assert matches(box, "lunch boxes") and matches(box, "glass")
