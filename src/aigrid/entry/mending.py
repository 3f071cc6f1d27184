"""What code can put right in a small model's plan from the request alone.

A 135M planner gets the shape of a plan from its worked example and often the details wrong in
ways that need no model to see: it takes the ``sku`` from a search instead of the item it chose,
stops at the choice of a request that says "buy it", writes the example's quantity, or searches
for "mice" where the shops sell a "mouse". The planner mends these before it judges the plan:

- ``mended``: a reference to a search whose results a later choice picks from is a reference to
  that choice; a request that asks to buy (and does not say not to) gets the ordering steps of
  the nearest example that orders after the same searches and choices; each quantity and each
  number of nights is the one the request says for that item.
- ``relaxed``: a plan whose searches found nothing is tried again with plainer queries (without
  filler words, irregular plurals made singular: "mice" finds a mouse), its choices asking the same.
- ``ordered``: a plan that stops at its choice for a request that asks to buy gets the call that
  orders the chosen item, where exactly one operation of its service can, from the item's fields.
- ``rated``: a choice among rated items (a ``stars`` or ``rating`` field) that the request asks
  a rating of ("a 4-star hotel") asks for it too.

Nothing here knows the right answer: each mend reads the plan, the request and what the plan's
own read-only steps found.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aigrid.entry.catalog import Catalog
from aigrid.entry.grounding import NUMBER_WORDS, asking_word, changes_world
from aigrid.entry.plan import (
    RATING_FIELDS,
    REFERENCE,
    Plan,
    is_number,
    map_strings,
    rating_asked,
    references,
    singular,
)

if TYPE_CHECKING:
    from aigrid.entry.planner import PlanExample
    from aigrid.entry.reading import Reading

# Plurals that no ending rule makes singular, as shops name their products.
_IRREGULAR = {
    "mice": "mouse",
    "geese": "goose",
    "feet": "foot",
    "teeth": "tooth",
    "children": "child",
    "men": "man",
    "women": "woman",
    "people": "person",
    "knives": "knife",
    "shelves": "shelf",
    "leaves": "leaf",
}
# Words just before a number that make it no count ("size 42", "under 300", "December 6"), and
# just after it ("300 yuan", "2 nights", "4-star", "16 GB").
_NOT_COUNT_BEFORE = frozenset(
    [
        *("size", "under", "over", "than", "about", "roughly", "around", "below", "above", "max"),
        *("at", "no", "number", "january", "february", "march", "april", "may", "june", "july"),
        *("august", "september", "october", "november", "december", "jan", "feb", "mar", "apr"),
        *("jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"),
    ]
)
_NOT_COUNT_AFTER = frozenset(
    [
        *("yuan", "rmb", "cny", "dollars", "usd", "cents", "night", "nights", "star", "stars"),
        *("gb", "tb", "mah", "l", "kg", "g", "inch", "inches", "percent", "pm", "am", "th", "st"),
        *("nd", "rd"),
    ]
)
# Argument names that hold a search's words, as services conventionally call them.
_QUERY_ARGS = ("query", "q", "keywords", "search", "text")
# Tokens of a request: words (with inner hyphens or apostrophes) and the marks that end a phrase.
_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[.,;:!?]")
_PHRASE_ENDS = frozenset(".,;:!?") | {"and", "or", "but", "then", "plus"}
# How far before an item's name its count may be said ("two bowls of shrimp wonton noodles").
_COUNT_REACH = 3
# Words of a request that asks for something to be bought, ordered or booked ("can you order",
# "I'd like 3", "put me on the earliest flight", "3 nights, please").
_ACTING = frozenset(
    [
        *("buy", "bought", "order", "ordering", "get", "book", "purchase", "send", "deliver", "reserve"),
        *("grab", "pick", "need", "want", "like", "please", "put", "plan", "fly"),
    ]
)
# What a request says when it only asks: a question that begins with a question word, at the start
# or after a leading clause ("Before I decide, which shop ...?"; "can you order ...?" is a request),
# not to buy, order or book ("no order yet"), or that it is only asking. On the entry
# suite's 634 training sentences this tells all 80 questions from the 554 requests to act.
_ONLY_ASKING = re.compile(
    r"(?:^|[.!?,;:]\s+)(?:how|what|what's|whats|which|where|where's|when|who|is|are|does|do)\b[^.!?]*\?"
    r"|(?:n't|\bnot|\bnever|\bwithout|\bno need to|\bno)\s+(?:\w+\s+){0,2}"
    r"(?:buy|order|book|purchas|plac|reserv)\w*"
    r"|\btell me\b|\b(?:only|just) (?:asking|checking|looking|curious)\b|\bjust checking\b"
)


def mended(text: str, plan: Plan, catalog: Catalog, examples: list[PlanExample]) -> Plan:
    """``plan`` with what the request alone shows wrong put right (the same plan when nothing is)."""
    steps = _dumped(plan)
    steps = _chosen_references(steps)
    steps = _acting_as_asked(text, steps, catalog, examples)
    steps = _said_counts(text, steps)
    return _rebuilt(plan, steps)


def relaxed(plan: Plan) -> Iterator[Plan]:
    """The plan with its search queries in plainer words (filler words dropped, irregular plurals
    made singular: "mice" finds a mouse), its choices asking the same, where any query changes;
    for searches that found nothing. No word that names the thing is dropped: "nimbus 16 laptop"
    must not become a search for any Nimbus."""
    steps = _dumped(plan)
    queries = {
        str(v).lower()
        for s in steps
        if "call" in s
        for k, v in s.get("args", {}).items()
        if k in _QUERY_ARGS and isinstance(v, str) and not v.startswith("$")
    }
    plainer = {q: " ".join(_plain(q)) for q in queries}
    if any(q != p and p for q, p in plainer.items()):
        yield _rebuilt(plan, _with_queries(steps, plainer))


def rated(text: str, plan: Plan, reading: Reading) -> Plan:
    """``plan`` whose choices among rated items ask for the rating the request says ("4-star")."""
    asked = rating_asked(text)
    if asked is None:
        return plan
    steps = _dumped(plan)
    for step in steps:
        item = reading.chosen.get(str(step.get("id")))
        if "choose" not in step or item is None or rating_asked(str(step.get("match", ""))) is not None:
            continue
        if any(is_number(item.fields.get(f)) for f in RATING_FIELDS):
            step["match"] = f"{step.get('match', '')} {asked}-star".strip()
    return _rebuilt(plan, steps)


def ordered(text: str, plan: Plan, reading: Reading, catalog: Catalog) -> Plan:
    """``plan`` that stops at its choice for a request that asks to buy, with the call that orders
    the chosen item: the one operation of the item's service that changes the world and whose every
    required argument the item's fields (or the count the request says) fill."""
    steps = _dumped(plan)
    if any(changes_world(str(s.get("call")), catalog) for s in steps) or not asks_to_act(text):
        return plan
    last = next((s for s in reversed(steps) if "choose" in s), None)
    item = None if last is None else reading.chosen.get(str(last["id"]))
    if last is None or item is None:
        return plan
    fitting = []
    for operation in catalog.plannable():
        if operation.service != item.service or not operation.changes_world:
            continue
        args = _filled(operation.parameters, last, item.fields, text)
        if args is not None:
            fitting.append((operation, args))
    if len(fitting) != 1:
        return plan
    (operation, args), taken = fitting[0], {str(s["id"]) for s in steps}
    return _rebuilt(plan, [*steps, {"id": _free_id(taken), "call": operation.name, "args": args}])


def _free_id(taken: set[str]) -> str:
    """A new step id, ``act1`` and on, that no step has; taken from then on."""
    found = next(f"act{m}" for m in range(1, len(taken) + 2) if f"act{m}" not in taken)
    taken.add(found)
    return found


def _filled(parameters: dict[str, Any], choice: dict[str, Any], fields: dict[str, Any], text: str) -> Any:
    """Arguments for every required parameter, from the chosen item's fields or the count the request
    says (None where one cannot be filled)."""
    args: dict[str, Any] = {}
    for name in parameters.get("required", []):
        if name in fields:
            args[name] = f"${choice['id']}.{name}"
            continue
        if name != "quantity":
            return None
        tokens = _TOKEN.findall(text.lower())
        match = str(choice.get("match", ""))
        said = _said_count(tokens, match)
        if said is None and _says_a_number(tokens, [match]):
            return None  # a number said, not for this item: not code's to guess
        args[name] = 1 if said is None else said
    return args


def _dumped(plan: Plan) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json", by_alias=True) for s in plan.steps]


def _rebuilt(plan: Plan, steps: list[dict[str, Any]]) -> Plan:
    """The plan ``steps`` make, or ``plan`` when they make the same one or none that validates."""
    if steps == _dumped(plan):
        return plan
    try:
        return Plan.model_validate({"steps": steps})
    except ValueError:
        return plan


def _chosen_references(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``$search.sku`` is ``$choice.sku`` where a choice before the step picks from that search."""
    picked_from: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for step in steps:
        if "choose" in step:
            for source in step.get("from", []):
                picked_from.setdefault(str(source), str(step["id"]))
            out.append(step)
        else:
            out.append({**step, "args": _renamed(step.get("args", {}), dict(picked_from))})
    return out


def _renamed(value: Any, names: dict[str, str]) -> Any:
    """``value`` with each reference to a step of ``names`` made to the step it is renamed to."""

    def renamed(text: str) -> str:
        found = REFERENCE.match(text)
        return f"${names[found[1]]}.{found[2]}" if found and found[1] in names else text

    return map_strings(value, renamed)


def _acting_as_asked(
    text: str, steps: list[dict[str, Any]], catalog: Catalog, examples: list[PlanExample]
) -> list[dict[str, Any]]:
    """A plan that stops at its choice for a request that asks to buy gets the ordering steps of the
    nearest example that orders after the same searches and choices."""
    if any(changes_world(str(s.get("call")), catalog) for s in steps) or not asks_to_act(text):
        return steps
    shape = [_shape(s) for s in steps]
    for example in examples:
        own = [s for s in example.plan.get("steps", []) if isinstance(s, dict)]
        acting = [s for s in own if changes_world(str(s.get("call")), catalog)]
        reading = [s for s in own if s not in acting]
        if not acting or [_shape(s) for s in reading] != shape:
            continue
        renamed = {str(e.get("id")): str(s["id"]) for e, s in zip(reading, steps, strict=True)}
        taken = {str(s["id"]) for s in steps}
        for step in acting:
            renamed[str(step.get("id"))] = _free_id(taken)
        added = [
            {
                "id": renamed[str(s.get("id"))],
                "call": s["call"],
                "args": _renamed(s.get("args", {}), renamed),
                "after": [renamed.get(str(a), str(a)) for a in s.get("after", [])],
            }
            for s in acting
        ]
        return [*steps, *added]
    return steps


def asks_to_act(text: str) -> bool:
    """Whether a request says to buy, order or book, and nowhere that it only asks."""
    lowered = text.lower()
    return not _ONLY_ASKING.search(lowered) and bool(_ACTING & set(_TOKEN.findall(lowered)))


def _shape(step: dict[str, Any]) -> tuple[str, ...]:
    """What a step does, whatever it is called: the call it makes, or the choice and what it picks from."""
    if "choose" in step:
        return ("choose", str(step.get("choose")), str(len(step.get("from", []))))
    return ("call", str(step.get("call")))


def _said_counts(text: str, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each quantity the count the request says for its item, and nights the nights it says."""
    tokens = _TOKEN.findall(text.lower())
    matches = {str(s["id"]): str(s.get("match", "")) for s in steps if "choose" in s}
    says_a_number = _says_a_number(tokens, list(matches.values()))
    nights = _said_nights(tokens)

    def fixed(value: Any) -> Any:
        if isinstance(value, list):
            return [fixed(v) for v in value]
        if not isinstance(value, dict):
            return value
        value = {k: fixed(v) for k, v in value.items()}
        if nights is not None and _is_count(value.get("nights")):
            value["nights"] = nights
        if _is_count(value.get("quantity")):
            chosen = [r for r, _ in references(value) if r in matches]
            said = _said_count(tokens, matches[chosen[-1]]) if chosen else None
            if said is None and not says_a_number:
                said = 1
            if said is not None:
                value["quantity"] = said
        return value

    return [{**s, "args": fixed(s["args"])} if "call" in s else s for s in steps]


def _says_a_number(tokens: list[str], names: list[str]) -> bool:
    """Whether the request says a count anywhere: not "a", and no number in the items' names, a
    size, a price, a date or nights ("size 42", "under 300 yuan", "December 6", "2 nights")."""
    named = {w for name in names for w in re.findall(r"[a-z0-9]+", name.lower())}
    for at, token in enumerate(tokens):
        if token in ("a", "an") or token in named or _count_word(token) is None:
            continue
        before = tokens[at - 1] if at > 0 else ""
        after = tokens[at + 1] if at + 1 < len(tokens) else ""
        if before not in _NOT_COUNT_BEFORE and after not in _NOT_COUNT_AFTER:
            return True
    return False


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _said_count(tokens: list[str], match: str) -> int | None:
    """The count said just before the first mention of ``match``'s words in the request, if any."""
    words = [singular(w) for w in re.findall(r"[a-z0-9]+", match.lower()) if not asking_word(w)]
    if not words:
        return None
    for at, token in enumerate(tokens):
        if singular(token) != words[0]:
            continue
        for back in range(1, _COUNT_REACH + 1):
            before = tokens[at - back] if at - back >= 0 else None
            if before is None or before in _PHRASE_ENDS:
                break
            count = _count_word(before)
            if count is not None:
                return count
        return None
    return None


def _said_nights(tokens: list[str]) -> int | None:
    """The nights a request says ("for 3 nights", "one night"), if it says them once."""
    said = {
        count
        for at, token in enumerate(tokens)
        if token in ("night", "nights") and at > 0 and (count := _count_word(tokens[at - 1])) is not None
    }
    return said.pop() if len(said) == 1 else None


def _count_word(token: str) -> int | None:
    """The count a word says: "3", "three", "a"; None for anything else."""
    if token.isdigit() and 0 < len(token) <= 3:
        return int(token)
    if token in ("a", "an"):
        return 1
    return NUMBER_WORDS.get(token)


def _plain(words: str) -> list[str]:
    """``words`` without filler words, irregular plurals made singular."""
    found = re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", words.lower())
    return [_IRREGULAR.get(w, w) for w in found if not asking_word(w)]


def _with_queries(steps: list[dict[str, Any]], plainer: dict[str, str]) -> list[dict[str, Any]]:
    """``steps`` searching in plainer words, and choosing by the same plainer words."""
    out: list[dict[str, Any]] = []
    for step in steps:
        if "call" in step:
            args = {
                k: plainer.get(v.lower(), v) if k in _QUERY_ARGS and isinstance(v, str) else v
                for k, v in step.get("args", {}).items()
            }
            out.append({**step, "args": args})
        elif "choose" in step and step.get("match"):
            out.append({**step, "match": " ".join(_plain(str(step["match"])))})
        else:
            out.append(step)
    return out
