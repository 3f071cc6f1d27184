"""The eval suites: fixed, recorded splits of tasks, shipped with the package.

Each suite has a training split (made by ``aigrid.learn.generate`` from the example services' own
catalogs) and a held-out split (hand-written sentences). ``splits.json`` records every split's
file, size, SHA-256 and how it was made; a suite whose file no longer matches its record refuses
to load, so a split cannot change under a comparison. Only ``train`` may be read by anything
that learns (``Suites.training``); evals read either.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from aigrid.learn.verifiers import COMPILER_METRICS, ENTRY_METRICS, TOOL_METRICS
from aigrid.store.accounts import AccountError

SUITES_DIR = Path(__file__).parent / "suites"
Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")
# The tools the compiler and tool-calling suites offer (fictional services; nothing runs).
TOOL_CATALOG = SUITES_DIR / "compiler_tools.json"


class SuiteError(AccountError):
    """A suite or split that cannot be used, with the HTTP status it maps to."""


@dataclass(frozen=True)
class Suite:
    """One suite: its name, what it measures and its two splits."""

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
            recorded = self.record.get(split, {})
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
