"""The eval suites: fixed, recorded splits of tasks, shipped with the package.

Each suite has a training split (made by ``aigrid.learn.generate`` from the example services' own
catalogs) and a held-out split (hand-written sentences); the entry suite also has an ``unseen``
split, over products, flight routes and a restaurant that no training task mentions (an
entity-disjoint split). ``splits.json`` records every split's file, size, SHA-256 and how it was
made, and the unseen split's entities; a suite whose file no longer matches its record refuses to
load, so a split cannot change under a comparison. Only ``train`` may be read by anything that
learns (``Suites.training``); evals read any. ``held_out`` says whether a sentence is held-out
material, so that whatever builds training data can leave it out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal

from aigrid.learn.verifiers import COMPILER_METRICS, ENTRY_METRICS, TOOL_METRICS
from aigrid.store.accounts import AccountError

SUITES_DIR = Path(__file__).parent / "suites"
Split = Literal["train", "heldout", "unseen"]
SPLITS: tuple[Split, ...] = ("train", "heldout", "unseen")
# The splits nothing that learns may read, nor learn from a sentence of.
HELD_OUT_SPLITS: tuple[Split, ...] = ("heldout", "unseen")
# Words after a cuisine that make it a place ("salad place"); "Cucumber Salad" alone is a dish.
_PLACE_WORDS = r"(?:restaurant|place|spot|bar|kitchen|joint|shop|delivery)s?"
# The tools the compiler and tool-calling suites offer (fictional services; nothing runs).
TOOL_CATALOG = SUITES_DIR / "compiler_tools.json"


def normalised(text: str) -> str:
    """``text`` in lower case with punctuation dropped and spaces collapsed: how sameness is judged."""
    return " ".join(re.findall(r"\w+", text.lower()))


class SuiteError(AccountError):
    """A suite or split that cannot be used, with the HTTP status it maps to."""


@dataclass(frozen=True)
class Suite:
    """One suite: its name, what it measures and its recorded splits."""

    name: str
    description: str
    metrics: tuple[str, ...]
    folder: Path = SUITES_DIR

    @cached_property
    def record(self) -> dict[str, Any]:
        """This suite's entry in ``splits.json`` (empty when the file has none)."""
        path = self.folder / "splits.json"
        recorded = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        return dict(recorded.get(self.name, {}))

    def path(self, split: Split) -> Path:
        """The split's file."""
        recorded = self.record.get(split, {})
        return self.folder / str(recorded.get("file") or f"{self.name}_{split}.jsonl")

    def tasks(self, split: Split) -> list[dict[str, Any]]:
        """The split's tasks in file order; SuiteError if the file is missing or not as recorded."""
        path = self.path(split)
        if not path.exists():
            raise SuiteError(409, f"Suite '{self.name}' has no {split} split here ({path.name} is missing).")
        data = path.read_bytes()
        recorded = self.record.get(split, {})
        if recorded.get("sha256") and hashlib.sha256(data).hexdigest() != recorded["sha256"]:
            raise SuiteError(
                409, f"Suite '{self.name}' {split} split differs from its record in splits.json; it is fixed."
            )
        tasks = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        for n, task in enumerate(tasks, 1):
            task.setdefault("id", f"{self.name}-{split}-{n:04d}")
        return tasks

    def to_json(self) -> dict[str, Any]:
        """The suite as ``GET /v1/learn/suites`` shows it."""
        splits = {}
        for split in SPLITS:
            if split not in self.record:  # compiler and tools have no unseen split
                continue
            recorded = self.record[split]
            try:
                size = len(self.tasks(split))
            except SuiteError:
                size = 0
            splits[split] = {"tasks": size, "made": recorded.get("made", "")}
        return {
            "name": self.name,
            "description": self.description,
            "metrics": list(self.metrics),
            "splits": splits,
        }


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            "entry",
            "Sentences for the super entry over the example services, judged by what their plan would "
            "buy (seller, item, quantity), without buying anything.",
            ENTRY_METRICS,
        ),
        Suite(
            "compiler",
            "One-sentence descriptions of agents, judged by the compiled spec's tools and trigger.",
            COMPILER_METRICS,
        ),
        Suite(
            "tools",
            "Requests to call one of a few tools, judged by the tool and its arguments.",
            TOOL_METRICS,
        ),
    )
}


def suite(name: str) -> Suite:
    """The suite called ``name``; a 400 naming the known ones otherwise."""
    found = SUITES.get(name)
    if found is None:
        raise SuiteError(400, f"Unknown suite '{name}'; the suites are {', '.join(SUITES)}.")
    return found


def training(name: str) -> list[dict[str, Any]]:
    """A suite's training tasks: the only split anything that learns may read."""
    return suite(name).tasks("train")


def _phrase(words: str) -> str:
    """A pattern for ``words`` as whole words, any spacing between them."""
    return r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words.split()) + r"(?!\w)"


@dataclass(frozen=True)
class Mentions:
    """Whether a text mentions one of some unseen entities, as ``splits.json`` records them.

    A name (product, SKU, restaurant, dish, flight) counts as whole words in any case and with any
    punctuation; a route as its two cities in one clause ("from A ... to B", "to B ... from A",
    "A-B"); a restaurant's cuisine as that cuisine's place ("salad place"). Names are looked for in
    the normalised text, and a clause's pattern only runs when all its words are there: fast.
    """

    names: tuple[str, ...]  # normalised, with a space either side
    clauses: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...]  # words it needs, then the pattern

    @classmethod
    def of(cls, entities: Mapping[str, Any]) -> Mentions:
        """The mentions of ``entities``: ``names``, ``routes`` and ``cuisine_words``."""
        names = {f" {normalised(str(n))} " for n in entities.get("names", ())} - {"  "}
        clauses: list[tuple[tuple[str, ...], re.Pattern[str]]] = []
        for origin, destination in entities.get("routes", ()):
            a, b = _phrase(str(origin)), _phrase(str(destination))
            said = rf"{a}[^.?!;]*?\bto\s+{b}|\b(?:to|in|into)\s+{b}[^.?!;]*?\b(?:from|out\s+of)\s+{a}"
            pattern = re.compile(rf"{said}|{a}\s*(?:-|–|→)\s*{b}", re.IGNORECASE)
            clauses.append(((f" {normalised(str(origin))} ", f" {normalised(str(destination))} "), pattern))
        for word in entities.get("cuisine_words", ()):
            pattern = re.compile(rf"{_phrase(str(word))}\s+{_PLACE_WORDS}(?!\w)", re.IGNORECASE)
            clauses.append(((f" {normalised(str(word))} ",), pattern))
        return cls(tuple(sorted(names)), tuple(clauses))

    def __call__(self, text: str) -> bool:
        """Whether ``text`` names one of the entities."""
        return self.found(text, f" {normalised(text)} ")

    def found(self, text: str, said: str) -> bool:
        """Whether ``text``, normalised and padded with a space either side as ``said``, names one."""
        return any(name in said for name in self.names) or any(
            all(word in said for word in words) and pattern.search(text) for words, pattern in self.clauses
        )


@dataclass(frozen=True)
class HeldOut:
    """The held-out material of some suites: their held-out and unseen sentences and unseen entities."""

    texts: frozenset[str]
    mentions: Mentions

    @classmethod
    def of(cls, suites: Iterable[Suite]) -> HeldOut:
        """What ``suites`` hold out; a split whose file differs from its record raises SuiteError."""
        texts: set[str] = set()
        entities: dict[str, list[Any]] = {}
        for one in suites:
            for split in HELD_OUT_SPLITS:
                if one.path(split).exists():  # a suite without the split holds nothing out in it
                    texts |= {
                        normalised(str(t.get("input") or t.get("description") or ""))
                        for t in one.tasks(split)
                    }
            for key, values in (one.record.get("unseen", {}).get("entities") or {}).items():
                entities.setdefault(key, []).extend(values)
        return cls(frozenset(texts), Mentions.of(entities))

    def __call__(self, text: str) -> bool:
        """Whether ``text`` must never be learned from."""
        key = normalised(text)
        return key in self.texts or self.mentions.found(text, f" {key} ")


@cache
def _held_out() -> HeldOut:
    return HeldOut.of(SUITES.values())


def held_out(text: str) -> bool:
    """Whether ``text`` must never be learned from: held-out or unseen sentences, unseen entities."""
    return _held_out()(text)
