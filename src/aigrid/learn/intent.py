"""Whether a sentence asks to change the world or only to know, learned from verified plans.

Two sentences about the same flight, "book the cheapest flight ..." and "what is the cheapest
flight ...? don't book it", share nearly every word, so nearness alone hands a planner examples of
the wrong kind, and a small model copies the kind it is shown. The verified plans say which kind
each of their sentences was (a plan that ends by calling an operation acts; one that ends with a
choice only answers), and a naive Bayes classifier over the sentences' words learns what tells
them apart ("don't", "just tell me", "how much"). It is trained on the examples a tenant
is shown, again whenever they change, and breaks no tie on its own: with too few of either kind it
prefers nothing.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aigrid.learn.experience import ExampleIndex
from aigrid.store.experience import ExampleRecord

_WORD = re.compile(r"[a-z0-9']+|[?]")
# Fewer examples of a kind than this and the classifier prefers nothing.
_MIN_PER_CLASS = 5


def acts(example: dict[str, object]) -> bool:
    """Whether a plan (in its own form) ends by calling an operation: it changes the world."""
    steps = example.get("steps")
    return isinstance(steps, list) and bool(steps) and isinstance(steps[-1], dict) and "call" in steps[-1]


def features(text: str) -> list[str]:
    """The sentence's words, lower case ("don't" is one word; a question mark counts as one).

    Word pairs were tried too: on the generated training sentences they learned the templates'
    phrasing and judged hand-written sentences worse than single words do.
    """
    return list(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class NaiveBayes:
    """A two-class multinomial naive Bayes over ``features``, with add-one smoothing."""

    counts: tuple[Counter[str], Counter[str]]
    totals: tuple[int, int]
    priors: tuple[float, float]
    vocabulary: int

    @staticmethod
    def trained(examples: Iterable[tuple[str, bool]]) -> NaiveBayes | None:
        """The classifier of (sentence, label) pairs; None with too few of either label."""
        counts: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        seen = [0, 0]
        for text, label in examples:
            counts[label].update(features(text))
            seen[label] += 1
        if min(seen) < _MIN_PER_CLASS:
            return None
        vocabulary = len(set(counts[0]) | set(counts[1]))
        total = sum(seen)
        return NaiveBayes(
            counts,
            (sum(counts[0].values()), sum(counts[1].values())),
            (math.log(seen[0] / total), math.log(seen[1] / total)),
            vocabulary,
        )

    def predict(self, text: str) -> bool:
        """The likelier label of ``text``."""
        scores = []
        for label in (0, 1):
            denominator = self.totals[label] + self.vocabulary
            score = self.priors[label]
            for feature in features(text):
                score += math.log((self.counts[label][feature] + 1) / denominator)
            scores.append(score)
        return scores[1] > scores[0]


def acting_as_asked(index: ExampleIndex, text: str) -> Callable[[ExampleRecord], bool]:
    """A test of each example: does its plan act as ``text`` asks? (a ``Prefer`` for plan lookups)"""
    if "acting" not in index.derived:
        index.derived["acting"] = NaiveBayes.trained(
            (e.text, acts(e.example)) for e in index.records.values()
        )
    model: NaiveBayes | None = index.derived["acting"]
    if model is None:
        return lambda _example: True
    wanted = model.predict(text)
    return lambda example: acts(example.example) == wanted
