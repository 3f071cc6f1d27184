"""The tool choice learned from verified specs: side asks found however the rest is worded."""

from __future__ import annotations

import itertools

from aigrid.learn.tool_choice import MIN_EXAMPLES, fit

ACTIONS = [
    ("check the price of the {} in both shops", ("shop.search",)),
    ("look up the weather in {}", ("weather.forecast",)),
    ("see where my {} order is", ("food.status",)),
    ("find news about {}", ("news.search",)),
]
THINGS = ("Lumen monitor", "Hangzhou", "noodle", "Beijing metro", "kettle")
ASKS = [("", ()), (" and tell me", ("notify.owner",)), (" and let me know", ("notify.owner",))]


def examples() -> list[tuple[str, tuple[str, ...]]]:
    made = []
    for (action, tools), thing, (ask, extra) in itertools.product(ACTIONS, THINGS, ASKS):
        made.append((action.format(thing).capitalize() + ask, tools + extra))
    return made


def test_a_side_ask_is_learned_apart_from_the_action_it_comes_with() -> None:
    models = fit(examples())
    assert models is not None
    told = models.choose("Every morning, check where my dumpling order is and tell me")
    assert told["food.status"] and told["notify.owner"] and not told["shop.search"]
    quiet = models.choose("Look up the weather in Chengdu for the weekend")
    assert quiet["weather.forecast"] and not quiet["notify.owner"], "no ask, no note"


def test_too_few_examples_or_grants_teach_nothing() -> None:
    assert fit(examples()[: MIN_EXAMPLES - 1]) is None, "the vote decides until there are enough"
    rare = [*examples(), ("Book the cheapest flight to Beijing", ("travel.book",))]
    models = fit(rare)
    assert models is not None and "travel.book" not in models.models, "one grant is no lesson"
    assert set(models.choose("Book a flight")) == {
        "shop.search",
        "weather.forecast",
        "food.status",
        "news.search",
        "notify.owner",
    }
