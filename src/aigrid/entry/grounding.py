"""What a request says, and whether a plan keeps to it.

A small model copies its worked example: shown a plan that ordered 4 egg tarts at the nearest
Cantonese place, it orders 4 for a request of 3, or the example's dish instead of the one asked
for, and the plan still checks and runs. Two things tell such a copy without knowing the right
answer. The grammar lets the arguments that every example wrote in its request's words be written
only in this request's phrases (``said_in``). After the model answers, ``unkept`` lists what a plan
that acts leaves out of its request (a number it says) and what a choice looks for that the request
never says; the planner sends such a plan back once with those words, and keeps it when the model
has nothing better. Words that the examples' own choices used without their requests saying them
(a cuisine, "noodles") are a choice's vocabulary, not a copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aigrid.entry.catalog import Catalog
from aigrid.entry.plan import CallStep, ChooseStep, Plan, singular

if TYPE_CHECKING:
    from aigrid.entry.planner import PlanExample

# A phrase of the request is at most this many characters: the longest string argument.
MAX_STRING = 40
# A phrase of the request is at most this many words; what ends a word is not part of it.
_MAX_PHRASE_WORDS = 6
_EDGE = ".,;:!?()[]{}\"'“”‘’"
_SAYABLE = re.compile(r'^[^$"\\][^"\\]*$')
# What a request says around its names and places, never a name or place itself: no phrase an
# argument is written in begins or ends with one ("How", "Book", "in Shanghai").
_ASKING_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "for",
        "in",
        "on",
        "at",
        "to",
        "from",
        "with",
        "and",
        "or",
        "by",
        "me",
        "my",
        "i",
        "i'm",
        "you",
        "it",
        "its",
        "is",
        "are",
        "be",
        "that",
        "this",
        "these",
        "those",
        "there",
        "here",
        "how",
        "what",
        "which",
        "where",
        "when",
        "who",
        "please",
        "just",
        "only",
        "get",
        "buy",
        "order",
        "book",
        "find",
        "send",
        "fly",
        "pick",
        "grab",
        "purchase",
        "reserve",
        "want",
        "need",
        "would",
        "like",
        "could",
        "can",
        "some",
        "any",
        "all",
        "each",
        "one",
    ]
)


@dataclass(frozen=True, slots=True)
class Said:
    """The request's own phrases, and the arguments to write in them: those the worked examples
    filled with words of their own requests (a product, a city), so the model copies the request's
    words, not the example's."""

    phrases: tuple[str, ...]
    arguments: frozenset[str]


def asking_word(word: str) -> bool:
    """Whether ``word`` is one a request says around its names and places ("the", "buy", "with")."""
    return word.lower() in _ASKING_WORDS


def said_in(text: str, examples: list[PlanExample]) -> Said:
    """What of ``text`` the plan's arguments may be written in, learned from ``examples``."""
    words = [w.strip(_EDGE) for w in text.split()]
    words = [w for w in words if w]
    found: dict[str, None] = {}
    for start in range(len(words)):
        for end in range(start + 1, min(len(words), start + _MAX_PHRASE_WORDS) + 1):
            phrase = " ".join(words[start:end])
            edges = {words[start].lower(), words[end - 1].lower()}
            if len(phrase) < MAX_STRING and _SAYABLE.match(phrase) and not edges & _ASKING_WORDS:
                found[phrase] = None
                found[phrase.lower()] = None
    return Said(tuple(found), copied_arguments(examples))


def copied_arguments(examples: list[PlanExample]) -> frozenset[str]:
    """The string arguments (and choices' ``match``) that every example filled from its request's words."""
    copied: dict[str, bool] = {}
    for example in examples:
        said = example.text.lower()
        for step in example.plan.get("steps", []):
            if not isinstance(step, dict):
                continue
            if "choose" in step:
                values = [("match", step.get("match"))]
            else:
                values = list((step.get("args") or {}).items())
            for name, value in values:
                if isinstance(value, str) and value and not value.startswith("$"):
                    copied[name] = copied.get(name, True) and value.lower() in said
    return frozenset(name for name, always in copied.items() if always)


# A number standing alone ("3 Egg Tarts", "December 6, 2026"), not one inside a name or a date
# written with hyphens ("30L", "6th", "4-star", "2026-12-06"); and numbers said in words.
_NUMBER = re.compile(r"(?<![\w.-])\d+(?![\w-])")
NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "single": 1,
    "dozen": 12,
}
_DIGITS = re.compile(r"\d+")
_WORD = re.compile(r"[a-z0-9]+")


def unkept(text: str, plan: Plan, catalog: Catalog, examples: list[PlanExample]) -> list[str]:
    """What ``plan`` leaves out of ``text`` or adds to it, in words for the model (empty: nothing)."""
    problems: list[str] = []
    acts = any(isinstance(s, CallStep) and changes_world(s.call, catalog) for s in plan.steps)
    shown = [_acts(e.plan, catalog) for e in examples]
    if shown and all(shown) and not acts:
        problems.append("it stops at a choice, while requests like this one go on to order or book it")
    if shown and not any(shown) and acts:
        problems.append("it orders or books, while requests like this one only ask")
    if acts:
        calls = [s.args for s in plan.steps if isinstance(s, CallStep)]
        said = {int(n) for n in _NUMBER.findall(text)}
        used = _numbers_in(calls) | _numbers_in([s.match for s in plan.steps if isinstance(s, ChooseStep)])
        problems += [f"the request says {n}, and no step uses it" for n in sorted(said - used)]
        said |= {NUMBER_WORDS[w] for w in _WORD.findall(text.lower()) if w in NUMBER_WORDS}
        written = {n for n in _integers_in(calls) if n > 1}
        problems += [f"it writes {n}, a number the request never says" for n in sorted(written - said)]
    known = _forms(text) | _choice_vocabulary(examples)
    for step in plan.steps:
        if isinstance(step, ChooseStep) and step.match:
            unsaid = [w for w in _WORD.findall(step.match.lower()) if not _forms(w) & known]
            if unsaid:
                problems.append(f"step '{step.id}' looks for '{step.match}', which the request never says")
    return problems


def _acts(plan: dict[str, Any], catalog: Catalog) -> bool:
    """Whether a plan (in its own form) calls an operation that changes the world."""
    steps = plan.get("steps", [])
    return any(isinstance(s, dict) and changes_world(str(s.get("call")), catalog) for s in steps)


def changes_world(call: str, catalog: Catalog) -> bool:
    """Whether ``call`` names an operation that changes the world."""
    operation = catalog.get(call)
    return operation is not None and operation.changes_world


def _integers_in(value: Any) -> list[int]:
    """The integers ``value`` holds as numbers (a quantity, nights), not in its strings."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [n for v in value for n in _integers_in(v)]
    return []


def _numbers_in(value: Any) -> set[int]:
    """Every number ``value`` holds: its numbers, and the digits in its strings but references."""
    if isinstance(value, bool):
        return set()
    if isinstance(value, int | float):
        return {int(value)}
    if isinstance(value, str):
        return set() if value.startswith("$") else {int(d) for d in _DIGITS.findall(value)}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return {n for v in value for n in _numbers_in(v)}
    return set()


def _choice_vocabulary(examples: list[PlanExample]) -> set[str]:
    """The words the examples' choices looked for that their requests did not say (a cuisine)."""
    found: set[str] = set()
    for example in examples:
        said = _forms(example.text)
        for step in example.plan.get("steps", []):
            match = step.get("match") if isinstance(step, dict) and "choose" in step else None
            if isinstance(match, str):
                found |= {w for w in _WORD.findall(match.lower()) if not _forms(w) & said}
    return found


def _forms(text: str) -> set[str]:
    """The words of ``text`` as written and as singulars, two ways ("noodles": noodle, noodl)."""
    words = _WORD.findall(text.lower())
    return {*words, *(singular(w) for w in words), *(w[:-1] for w in words if w.endswith("s"))}
