"""A plan: steps that call service operations, steps that choose among what they found, and how they
depend on each other.

A call's argument may be a reference ``$step.field``: a field of the item a choice step chose, or
of a call step's result. A step runs once every step it refers to (or names in ``after``) has
run, so steps with nothing between them run at once: searching two shops is two steps at once.

The choice rules read fields by the names services conventionally give them, stated here so a
third party can follow them: a price is ``price_cents`` (or another ``*_cents`` field, such as
``price_per_night_cents``); ``stock``, ``seats``, ``rooms`` or ``available`` at 0, or ``open``
false, is not available; a distance starts with ``distance``; a time is ``depart``, ``start``,
``time`` or ``date``; a rating is ``stars`` or ``rating``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, model_validator

STEP_ID = r"^[a-z][a-z0-9_]{0,11}$"
REFERENCE = re.compile(r"^\$([a-z][a-z0-9_]{0,11})\.([A-Za-z_][A-Za-z0-9_]{0,31})$")
MAX_STEPS = 10
Rule = Literal["cheapest", "nearest", "earliest", "best", "first"]
RULES: tuple[str, ...] = ("cheapest", "nearest", "earliest", "best", "first")
_AVAILABILITY_COUNTS = ("stock", "seats", "rooms", "available")
_AVAILABILITY_FLAGS = ("open", "available")
_TIME_FIELDS = ("depart", "start", "time", "date")
RATING_FIELDS = ("stars", "rating")
# A rating asked for in words: "4-star", "4 star", "5 stars" (one to five).
_RATING = re.compile(r"(?<![\w.])([1-5])\s*-?\s*stars?\b")
_NAME_FIELDS = ("name", "item", "title")
_CODE_FIELDS = ("airline", "id", "sku")


class PlanError(Exception):
    """A plan that cannot run as written; the message says why, for the planner or the user."""


class PlanFault(PlanError):
    """A plan wrong in itself, whatever the world holds: a field its step's result lacks."""


class CallStep(BaseModel):
    """Call a service operation (``service.operation``) with arguments."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=STEP_ID)
    call: str = Field(min_length=3, max_length=130)
    args: dict[str, Any] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list, max_length=MAX_STEPS)


class ChooseStep(BaseModel):
    """Choose one item among the results of earlier calls by a rule, e.g. the cheapest in stock."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=STEP_ID)
    choose: Rule
    from_: list[str] = Field(alias="from", min_length=1, max_length=MAX_STEPS)
    where: Literal["available", "any"] = "available"
    match: str = Field(default="", max_length=80)  # words the item must have, e.g. a product name


Step = Annotated[CallStep | ChooseStep, Field(union_mode="left_to_right")]


class Plan(BaseModel):
    """The steps, in an order where each refers only to steps before it."""

    model_config = ConfigDict(extra="forbid")

    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)

    @model_validator(mode="after")
    def _ordered(self) -> Plan:
        seen: set[str] = set()
        for step in self.steps:
            if step.id in seen:
                raise ValueError(f"two steps are called '{step.id}'")
            missing = [d for d in depends_on(step) if d not in seen]
            if missing:
                raise ValueError(f"step '{step.id}' needs {', '.join(missing)}, which no step before it is")
            seen.add(step.id)
        return self


def depends_on(step: CallStep | ChooseStep) -> list[str]:
    """The steps ``step`` must wait for: those it names in ``after`` or ``from``, or refers to."""
    if isinstance(step, ChooseStep):
        return list(dict.fromkeys(step.from_))
    return list(dict.fromkeys([*step.after, *(ref[0] for ref in references(step.args))]))


def references(value: Any) -> list[tuple[str, str]]:
    """Every ``$step.field`` in an argument value, as (step, field)."""
    if isinstance(value, str):
        found = REFERENCE.match(value)
        return [(found[1], found[2])] if found else []
    if isinstance(value, dict):
        return [ref for v in value.values() for ref in references(v)]
    if isinstance(value, list):
        return [ref for v in value for ref in references(v)]
    return []


@dataclass(frozen=True, slots=True)
class Item:
    """One thing a call found, with the service it came from and its result's own fields (a fee)."""

    service: str
    fields: dict[str, Any]
    context: dict[str, Any]  # the result's scalar fields beside its list of items

    def get(self, name: str) -> Any:
        """The item's field, else its result's (the menu's restaurant id for a dish)."""
        if name in self.fields:
            return self.fields[name]
        if name in self.context:
            return self.context[name]
        raise PlanFault(f"the chosen item has no field '{name}' (it has: {', '.join(self.fields)})")

    @property
    def label(self) -> str:
        """What a person calls the item."""
        for name in _NAME_FIELDS:
            value = self.fields.get(name)
            if isinstance(value, str) and value:
                return value
        codes = [str(self.fields[n]) for n in _CODE_FIELDS if isinstance(self.fields.get(n), str)]
        return " ".join(codes) or "an item"


def items_of(service: str, result: Any) -> list[Item]:
    """The items a result lists (its first list of objects); a result without one is one item."""
    if not isinstance(result, dict):
        return []
    context = {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
    for value in result.values():
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return [Item(service, dict(v), context) for v in value]
    return [Item(service, dict(result), {})]


def price_cents(item: Item) -> int | None:
    """The item's price: ``price_cents``, else its first ``*_cents`` field that is not a fee."""
    fields = item.fields
    names = ["price_cents"] + [k for k in fields if k.endswith("_cents") and "fee" not in k]
    for name in names:
        value = fields.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def fees_cents(item: Item) -> int:
    """Fees the seller adds to any order from the item's result (a delivery fee)."""
    return sum(
        v
        for k, v in item.context.items()
        if k.endswith("_fee_cents") and isinstance(v, int) and not isinstance(v, bool)
    )


def available(item: Item, needed: int = 1) -> bool:
    """Whether ``needed`` of the item can be had: no fewer left (stock, seats, rooms), nothing closed."""
    fields = item.fields
    for name in _AVAILABILITY_COUNTS:
        value = fields.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value < needed:
            return False
    return all(fields.get(name) is not False for name in _AVAILABILITY_FLAGS)


def matches(item: Item, words: str) -> bool:
    """Whether every word of ``words`` is in the item's text fields, singular or plural (case-insensitive),
    and a rating they ask for ("4-star", "5 stars") is the item's ``stars`` or ``rating``."""
    asked = rating_asked(words)
    if asked is not None:
        rating = next((item.fields[f] for f in RATING_FIELDS if is_number(item.fields.get(f))), None)
        if rating is None or float(rating) != asked:
            return False
        words = _RATING.sub(" ", words.lower())
    text = " ".join(str(v) for v in item.fields.values() if isinstance(v, str)).lower()
    return all(singular(w) in text for w in re.findall(r"[a-z0-9]+", words.lower()))


def rating_asked(text: str) -> int | None:
    """The number of stars ``text`` asks for ("a 4-star hotel", "5 stars"), if it says one."""
    found = _RATING.search(text.lower())
    return int(found[1]) if found else None


def is_number(value: Any) -> TypeGuard[int | float]:
    """Whether a field holds a number (an int or a float, not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def singular(word: str) -> str:
    """A plural's stem, enough for a words-in-text test: "banks" finds a bank, "boxes" a box."""
    for ending in ("ies", "es", "s"):
        if word.endswith(ending) and len(word) > len(ending) + 2 and not word.endswith("ss"):
            return word[: -len(ending)] + ("y" if ending == "ies" else "")
    return word


def choose(step: ChooseStep, found: list[Item], needed: int = 1) -> Item:
    """The item ``step``'s rule picks among ``found`` (with ``needed`` of it available, where it must
    be); PlanError says why there is none."""
    if not found:
        raise PlanError("nothing was found")
    candidates = [i for i in found if matches(i, step.match)]
    if not candidates:
        raise PlanError(f"nothing found matches '{step.match}'")
    if step.where == "available":
        candidates = [i for i in candidates if available(i, needed)]
        if not candidates:
            what = f"matching '{step.match}'" if step.match else "found"
            raise PlanError(f"nothing {what} is available (out of stock, sold out, full or closed)")
    if step.choose == "first":
        return candidates[0]
    key = _RULE_KEYS[step.choose]
    ranked = [(k, n, i) for n, i in enumerate(candidates) if (k := key(i)) is not None]
    if not ranked:
        raise PlanError(f"the items found say nothing to choose the {step.choose} by")
    return min(ranked, key=lambda r: (r[0], r[1]))[2]


def _first_number(item: Item, prefix: str) -> float | None:
    for name, value in item.fields.items():
        if name.startswith(prefix) and is_number(value):
            return float(value)
    return None


def _time(item: Item) -> str | None:
    for name in _TIME_FIELDS:
        value = item.fields.get(name)
        if isinstance(value, str):
            return value
    return None


def _negated_rating(item: Item) -> float | None:
    for name in RATING_FIELDS:
        value = item.fields.get(name)
        if is_number(value):
            return -float(value)
    return None


def _price(item: Item) -> float | None:
    price = price_cents(item)
    return None if price is None else float(price)


_RULE_KEYS: dict[str, Any] = {
    "cheapest": _price,
    "nearest": lambda item: _first_number(item, "distance"),
    "earliest": _time,
    "best": _negated_rating,
}


def resolve(value: Any, lookup: Any) -> Any:
    """``value`` with each reference replaced by ``lookup(step, field)``."""

    def replaced(text: str) -> Any:
        found = REFERENCE.match(text)
        return lookup(found[1], found[2]) if found else text

    return map_strings(value, replaced)


def map_strings(value: Any, change: Callable[[str], Any]) -> Any:
    """``value`` (JSON-like) with ``change`` applied to every string in it, however deep."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {k: map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [map_strings(v, change) for v in value]
    return value


def count_of(args: dict[str, Any]) -> int:
    """How many units an order's arguments ask for: its quantities (added up) times its nights."""
    quantities: list[int] = []
    nights: list[int] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, int) and not isinstance(v, bool) and k in ("quantity", "nights"):
                    (quantities if k == "quantity" else nights).append(v)
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(args)
    return (sum(quantities) if quantities else 1) * (nights[0] if nights else 1)
