"""Finding the tools a description needs: full-text search over the registry's names and descriptions.

An in-memory SQLite FTS5 index with the porter stemmer ("prices" finds "price"), ranked by bm25,
built per search: a tenant sees tens or hundreds of tools, which index in well under a millisecond.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

# Words that say nothing about which tool is needed; the rest of a description is the query.
# Times and days belong to the schedule, not to the tools ("every morning" names no tool).
_STOPWORDS = frozenset(
    """
    a about after all also an and any are as at be before both but by can do does each for from has
    have i if in into is it its me my of on or our please so some than that the their them then there
    these this to up us was we what when where which while who will with would you your
    check look find get show give make want need keep
    every daily weekly monthly yearly hourly day days week weeks month months year years hour hours
    minute minutes second seconds today tomorrow tonight morning mornings afternoon evening evenings
    night nights noon midnight am pm next last first time times weekday weekdays weekend weekends
    monday tuesday wednesday thursday friday saturday sunday mondays tuesdays wednesdays thursdays
    fridays saturdays sundays
    """.split()  # noqa: SIM905 - a word list reads better as words
)
# A tool scoring under this share of the best match is no match: a description that needs the
# shop's search should not also be granted every tool that shares one word with it.
STRONG = 0.6
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]+")


class Described(Protocol):
    """What can be searched: a tool, or anything else with a name and a description."""

    @property
    def name(self) -> str:
        """Its name; dots and underscores separate words."""
        ...

    @property
    def description(self) -> str:
        """What it does, in words."""
        ...


T = TypeVar("T", bound=Described)


@dataclass(frozen=True, slots=True)
class Found(Generic[T]):
    """A tool (or other described thing) that matches, and how well (higher is better)."""

    tool: T
    score: float


def search_tools(tools: list[T], text: str, limit: int = 8) -> list[Found[T]]:
    """The tools whose names or descriptions share a word with ``text``, best match first.

    No score cut: in a small registry a word most tools share scores near zero however relevant
    it is, so every match is a candidate and choosing among them is left to the model.
    """
    words = sorted({w.lower() for w in _WORD.findall(text)} - _STOPWORDS)
    if not tools or not words:
        return []
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE VIRTUAL TABLE tools USING fts5(name, description, tokenize='porter')")
        db.executemany(
            "INSERT INTO tools (rowid, name, description) VALUES (?, ?, ?)",
            [(i, t.name.replace(".", " ").replace("_", " "), t.description) for i, t in enumerate(tools)],
        )
        query = " OR ".join(f'"{w}"' for w in words)  # quoted: the words are data, not FTS syntax
        rows = db.execute(
            "SELECT rowid, -bm25(tools, 2.0, 1.0) FROM tools WHERE tools MATCH ? ORDER BY 2 DESC LIMIT ?",
            (query, limit),
        ).fetchall()
    finally:
        db.close()
    return [Found(tools[i], score) for i, score in rows]


def strong(found: list[Found[T]]) -> list[Found[T]]:
    """The matches that score at least ``STRONG`` times the best one."""
    return [f for f in found if found and f.score >= STRONG * found[0].score]
