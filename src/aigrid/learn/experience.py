"""The experience memory: verified examples, found again by meaning and by words, one tenant at a time.

A success (a plan whose saga ended done, a spec that was saved, a training task the verifier
accepted) is kept with its sentence's embedding, from the grid's own ``/v1/embeddings``. At the
next plan or compile the nearest few are shown to the model as worked examples. Nearness is the
fusion of two rankings (reciprocal rank fusion): cosine similarity of the embeddings, and the
full-text index's bm25 over the sentences' words; when the embedding model is down or none is
configured, the words alone decide. Failures are kept with their reasons, for training, and are
never shown. One tenant's examples never reach another tenant's prompts: every lookup and every
vector index is per tenant; only the training examples the admin taught the whole grid (``shared``,
no one's data) are shown to every tenant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aigrid.errors import APIError
from aigrid.store.db import StoreCalls
from aigrid.store.experience import ExampleRecord, ExperienceKind, ExperienceStore, Judgement, example_digest

log = logging.getLogger(__name__)

# Embeds texts for a tenant: one vector per text.
EmbedFn = Callable[[int, list[str]], Awaitable[list[list[float]]]]
# Rank fusion's constant: how much the top of one ranking outweighs the rest (the usual 60).
_FUSION_K = 60
# How deep each ranking is read before fusing.
_DEPTH = 20


@dataclass
class ExampleIndex:
    """The examples of one kind a tenant is shown, and the unit vectors of those embedded, as one matrix."""

    records: dict[int, ExampleRecord] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)
    rows: list[NDArray[np.float32]] = field(default_factory=list)
    matrix: NDArray[np.float32] | None = None
    # What was learned from these examples (a classifier), until they change.
    derived: dict[str, Any] = field(default_factory=dict)

    def add(self, record: ExampleRecord, vector: NDArray[np.float32] | None) -> None:
        self.records[record.id] = record
        self.derived.clear()
        if vector is not None:
            self.ids.append(record.id)
            self.rows.append(vector)
            self.matrix = None

    def nearest(self, query: NDArray[np.float32], depth: int) -> list[int]:
        if not self.ids:
            return []
        if self.matrix is None or self.matrix.shape[0] != len(self.ids):
            self.matrix = np.vstack(self.rows)
        if self.matrix.shape[1] != query.shape[0]:
            return []  # vectors of another embedding model: words alone decide
        scores = self.matrix @ query
        top = np.argsort(-scores)[:depth]
        return [self.ids[i] for i in top]


# Given every example shown and the sentence, which examples suit it best (a learned preference).
Prefer = Callable[["ExampleIndex", str], Callable[[ExampleRecord], bool]]


def unit(vector: list[float]) -> NDArray[np.float32]:
    """The vector scaled to length 1 (cosine similarity is then a dot product)."""
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a lookup found, nearest first, and how long it took."""

    examples: list[ExampleRecord]
    seconds: float
    by_meaning: bool


class ExperienceMemory:
    """Keeps judged examples and finds the nearest successes for a sentence."""

    def __init__(
        self,
        store: ExperienceStore,
        calls: StoreCalls,
        embed: EmbedFn | None,
        embedding_model: str | None,
        enabled: bool = True,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self._observe = observe
        self._calls = calls
        self._embed = embed
        self._embedding_model = embedding_model
        self.enabled = enabled
        self._indexes: dict[tuple[int, str], ExampleIndex] = {}

    async def _vector(self, tenant_id: int, text: str) -> NDArray[np.float32] | None:
        if self._embed is None:
            return None
        try:
            return unit((await self._embed(tenant_id, [text]))[0])
        except APIError as exc:  # the embedding model is busy, down or over budget: words still work
            log.info("experience: no embedding for a lookup (%s); full-text search alone", exc.message)
            return None

    async def remember(
        self,
        tenant_id: int,
        kind: ExperienceKind,
        text: str,
        example: dict[str, Any],
        outcome: Judgement,
        source: str,
        reason: str | None = None,
        shared: bool = False,
    ) -> tuple[ExampleRecord, bool]:
        """Keep a judged example; (it, whether it is new). A success is found by the very next lookup."""
        vector = await self._vector(tenant_id, text) if outcome == "success" else None
        record, new = await self._calls(
            self.store.add,
            tenant_id,
            kind,
            text,
            example,
            outcome,
            source,
            reason=reason,
            embedding=None if vector is None else vector.tobytes(),
            embedding_model=None if vector is None else self._embedding_model,
            shared=shared,
        )
        if new and outcome == "success":
            keys = [k for k in self._indexes if k[1] == kind and (shared or k[0] == tenant_id)]
            for key in keys:  # a shared example is every tenant's
                self._indexes[key].add(record, vector)
        return record, new

    async def known(self, tenant_id: int, kind: ExperienceKind, text: str, example: dict[str, Any]) -> bool:
        """Whether this very example is kept already (teaching skips its checks then)."""
        return await self._calls(self.store.holds, tenant_id, kind, example_digest(kind, text, example))

    async def recall(
        self, tenant_id: int, kind: str, text: str, k: int, prefer: Prefer | None = None
    ) -> Lookup:
        """The ``k`` successful examples nearest to ``text``, nearest first; those ``prefer`` picks
        out of the nearest few go before the rest. None when no example shares a word with ``text``:
        an embedding always has nearest neighbours, even of "asdf qwerty"."""
        began = time.perf_counter()
        if not self.enabled or k <= 0:
            return Lookup([], 0.0, False)
        worded = await self._calls(self.store.search, tenant_id, kind, text, _DEPTH)
        if not worded:  # no example shares a word with it: nothing is near, whatever a vector says
            return Lookup([], time.perf_counter() - began, False)
        vector = await self._vector(tenant_id, text)
        index = await self._index(tenant_id, kind)
        rankings = [worded] if vector is None else [worded, index.nearest(vector, _DEPTH)]
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, example_id in enumerate(ranking):
                fused[example_id] = fused.get(example_id, 0.0) + 1.0 / (_FUSION_K + rank)
        ranked = [index.records[i] for i in sorted(fused, key=lambda i: -fused[i]) if i in index.records]
        if prefer is not None:
            suits = prefer(index, text)
            ranked.sort(key=lambda e: not suits(e))  # stable: nearness orders each group
        found = ranked[:k]
        await self._calls(self.store.used, [e.id for e in found])
        seconds = time.perf_counter() - began
        if self._observe is not None:
            self._observe(seconds)
        return Lookup(found, seconds, vector is not None)

    async def examples(self, tenant_id: int, kind: str) -> ExampleIndex:
        """The successful examples of a kind a tenant is shown, with what was learned from them."""
        return await self._index(tenant_id, kind)

    async def _index(self, tenant_id: int, kind: str) -> ExampleIndex:
        index = self._indexes.get((tenant_id, kind))
        if index is None:
            index = ExampleIndex()
            for record in await self._calls(self.store.all, tenant_id, kind):
                embedded = record.embedding if record.embedding_model == self._embedding_model else None
                index.add(record, None if embedded is None else np.frombuffer(embedded, dtype=np.float32))
            self._indexes[(tenant_id, kind)] = index
        return index

    async def rejudge(self, tenant_id: int, source: str, outcome: Judgement, reason: str | None) -> int:
        """Judge again what ``source`` taught (a person said otherwise); how many examples changed."""
        ids = await self._calls(self.store.rejudge, tenant_id, source, outcome, reason)
        if ids:  # a success that became a failure must not be found again
            self._indexes.clear()
        return len(ids)

    async def forget(self, example_id: int, tenant_id: int | None) -> ExampleRecord:
        """Forget one example; 404 if the tenant has none of that id."""
        record = await self._calls(self.store.forget, example_id, tenant_id)
        for key in [
            k for k in self._indexes if k[1] == record.kind and (record.shared or k[0] == record.tenant_id)
        ]:
            del self._indexes[key]
        return record
