"""Whether a sentence asks to act or only to know, learned from verified plans' sentences."""

from __future__ import annotations

from aigrid.learn.experience import ExampleIndex
from aigrid.learn.intent import NaiveBayes, acting_as_asked, acts
from aigrid.store.experience import ExampleRecord

BUY = {
    "steps": [
        {"id": "a", "call": "s.search"},
        {"id": "p", "choose": "cheapest"},
        {"id": "b", "call": "s.order"},
    ]
}
LOOK = {"steps": [{"id": "a", "call": "s.search"}, {"id": "p", "choose": "cheapest"}]}
ACTING = [
    "buy me the {} from the cheaper shop",
    "order two {} please",
    "get me a {} wherever it is cheapest",
    "book the cheapest {} for me",
    "purchase one {} for the office",
    "grab a {} from whichever shop sells it for less",
]
ASKING = [
    "what does the {} cost? just tell me",
    "which shop has the {} cheaper? don't buy it",
    "how much is a {} at the cheaper shop?",
    "is the {} in stock anywhere? only asking",
    "tell me the lowest price of the {}, no purchase",
    "where is the {} cheapest? I'm just looking",
]
THINGS = ("kettle", "lamp", "yoga mat", "flight to Beijing", "power bank")


def record(n: int, text: str, plan: dict[str, object]) -> ExampleRecord:
    return ExampleRecord(
        n, 1, "plan", text, plan, "success", None, "suite:entry", False, None, None, 0, 0, None
    )


def index() -> ExampleIndex:
    shown = ExampleIndex()
    n = 0
    for thing in THINGS:
        for template, plan in [*((t, BUY) for t in ACTING), *((t, LOOK) for t in ASKING)]:
            n += 1
            shown.add(record(n, template.format(thing), plan), None)
    return shown


def test_a_plan_acts_when_it_ends_by_calling_an_operation() -> None:
    assert acts(BUY) and not acts(LOOK) and not acts({"steps": []}) and not acts({})


def test_sentences_that_share_their_words_are_told_apart_by_the_words_that_differ() -> None:
    model = NaiveBayes.trained(
        [(t.format(x), True) for t in ACTING for x in THINGS]
        + [(t.format(x), False) for t in ASKING for x in THINGS]
    )
    assert model is not None
    assert model.predict("please buy the cheapest desk fan")
    assert not model.predict("what does the cheapest desk fan cost? don't buy it")
    assert NaiveBayes.trained([("buy a lamp", True)] * 10 + [("what is a lamp?", False)] * 2) is None, (
        "too few of a kind to learn from"
    )


def test_the_preference_picks_examples_of_the_kind_the_sentence_asks_for_and_follows_new_ones() -> None:
    shown = index()
    suits = acting_as_asked(shown, "what does the cheapest desk fan cost? just tell me")
    looking = [e for e in shown.records.values() if suits(e)]
    assert looking and all(not acts(e.example) for e in looking)
    assert "acting" in shown.derived, "learned once for these examples"
    shown.add(record(999, "order a desk fan", BUY), None)
    assert "acting" not in shown.derived, "and again when they change"
    assert all(acts(e.example) for e in shown.records.values() if acting_as_asked(shown, "buy a desk fan")(e))
    few = ExampleIndex()
    few.add(record(1, "buy a lamp", BUY), None)
    assert acting_as_asked(few, "what is a lamp?")(record(1, "buy a lamp", BUY)), "no preference from too few"
