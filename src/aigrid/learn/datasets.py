"""Training sets in the OpenAI fine-tuning chat format, from what the world verified.

A dataset of a task kind (``planner``: entries' plans, ``compiler``: compiles, ``agents``:
processes) gathers, as ``{"messages": [..., {"role": "assistant", "content": ANSWER}]}`` lines:

- traces that ended in success: the model's last prompt and its answer, unless a person rated the
  work down;
- people's corrections of an entry's plan: the entry's prompt with the corrected plan as the answer;
- verified samples of a self-training round (``aigrid.learn.sampling``): the student's own or a
  teacher's answers that the verifier accepted.

Held-out material is left out by construction: an example any of whose requests is a held-out
sentence of a suite, or names an entity only the entity-disjoint split uses, never enters a
dataset (``aigrid.learn.suites.held_out``). Equal examples are kept once. The file is written
under the data directory and recorded with its SHA-256, so a model's lineage names exactly what it
learned from.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from aigrid.entry.plan import PlanError
from aigrid.entry.planner import REPAIR_PREFIXES, to_written
from aigrid.learn.suites import held_out
from aigrid.store.db import StoreCalls
from aigrid.store.feedback import FeedbackStore
from aigrid.store.learned import Dataset, LearnedStore, new_dataset_id
from aigrid.store.traces import TraceRecord, TraceStore

# Which traces teach which kind of task.
TRACE_KIND = {"planner": "entry", "compiler": "compile", "agents": "process"}
_MAX_TRACES = 100_000
_MAX_FEEDBACK = 100_000
_REQUEST = "Request: "


@dataclass(frozen=True, slots=True)
class Example:
    """One chat example: the prompt's messages and the answer to learn."""

    messages: list[dict[str, Any]]
    answer: str
    source: str

    def line(self) -> bytes:
        """The example as one line of the fine-tuning format."""
        return orjson.dumps({"messages": [*self.messages, {"role": "assistant", "content": self.answer}]})


def asks_held_out(messages: list[dict[str, Any]]) -> bool:
    """Whether any request in a prompt is held-out material (a held-out sentence or an unseen entity)."""
    for message in messages:
        if message.get("role") != "user":
            continue
        content = str(message.get("content") or "")
        if held_out(content.removeprefix(_REQUEST)):
            return True
    return False


class DatasetBuilder:
    """Gathers verified examples of a task kind into a recorded dataset file."""

    def __init__(
        self,
        traces: TraceStore,
        feedback: FeedbackStore,
        store: LearnedStore,
        calls: StoreCalls,
        folder: Path,
    ) -> None:
        self._traces = traces
        self._feedback = feedback
        self._store = store
        self._calls = calls
        self._folder = folder

    async def build(
        self, kind: str, tenant_id: int | None = None, samples: Iterable[Example] = ()
    ) -> Dataset:
        """A new dataset of ``kind`` from the traces (of one tenant, or all) and the given samples."""
        if kind not in TRACE_KIND:
            raise ValueError(f"unknown task kind '{kind}'; the kinds are {', '.join(TRACE_KIND)}")
        traces = await self._calls(self._traces.recent, tenant_id, TRACE_KIND[kind], None, _MAX_TRACES)
        ratings = await self._calls(self._feedback.recent, tenant_id, None, None, _MAX_FEEDBACK)
        rated_down = {f.target for f in ratings if f.rating == -1}
        corrections: dict[str, str] = {}
        for rating in ratings:  # newest first: a later correction replaces an earlier one
            if rating.correction and rating.kind == "entry":
                corrections.setdefault(rating.target, rating.correction)
        left_out: Counter[str] = Counter()
        candidates: list[Example] = []
        for trace in reversed(traces):  # oldest first: the file reads in the order things happened
            example = _from_trace(trace, rated_down, corrections.get(trace.subject), left_out)
            if example is not None:
                candidates.append(example)
        candidates.extend(samples)
        kept: list[Example] = []
        seen: set[bytes] = set()
        for example in candidates:
            if asks_held_out(example.messages):
                left_out["held_out"] += 1
                continue
            line = example.line()
            if line in seen:
                left_out["duplicate"] += 1
                continue
            seen.add(line)
            kept.append(example)
        return await self._write(kind, kept, left_out)

    async def _write(self, kind: str, examples: list[Example], left_out: Counter[str]) -> Dataset:
        dataset_id = new_dataset_id()
        self._folder.mkdir(parents=True, exist_ok=True)
        path = self._folder / f"{dataset_id}.jsonl"
        data = b"".join(e.line() + b"\n" for e in examples)
        partial = path.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(path)
        sources = Counter(e.source for e in examples)
        return await self._calls(
            self._store.add_dataset,
            kind,
            len(examples),
            dict(sources),
            dict(left_out),
            hashlib.sha256(data).hexdigest(),
            str(path),
            dataset_id,
        )


def _from_trace(
    trace: TraceRecord, rated_down: set[str], correction: str | None, left_out: Counter[str]
) -> Example | None:
    """The example a trace teaches: its answer if it succeeded, a person's correction if one was given."""
    if not trace.messages:
        left_out["no_prompt"] += 1
        return None
    if correction is not None:
        try:
            written = orjson.dumps(to_written(dict(orjson.loads(correction)))).decode()
        except (orjson.JSONDecodeError, PlanError, TypeError, ValueError):
            left_out["unreadable_correction"] += 1
            return None
        return Example(_first_prompt(trace.messages), written, "correction")
    if trace.outcome != "success" or not trace.answer:
        left_out["not_verified"] += 1
        return None
    if trace.subject in rated_down:
        left_out["rated_down"] += 1
        return None
    return Example(_first_prompt(trace.messages), trace.answer, "trace")


def _first_prompt(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The prompt before any retry: a retried plan's prompt ends with the refused answer and the
    refusal, and what is learned is the answer to the request itself."""
    last = messages[-1] if messages else {}
    if last.get("role") == "user" and str(last.get("content") or "").startswith(REPAIR_PREFIXES):
        return messages[:-2]
    return messages
