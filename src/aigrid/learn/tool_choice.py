"""Which tools a description needs, learned from the verified specs in the experience memory.

The nearest examples' vote (``kernel.compiler``) decides by what the most similar descriptions
granted, and similar descriptions share their main action far more often than their side asks:
"check where my delivery is and notify me" is nearest to delivery checks that notify no one. One
logistic regression per tool over the descriptions' words (TF-IDF, scikit-learn) learns which
words call for which tool across every verified spec a tenant is shown, however far apart the rest
of the sentences are. A tool with too few grants (or no description without it) gets no model: the
compiler's search decides it, as for a tool no example ever granted. The models are fitted again
whenever the tenant's examples change, on a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aigrid.learn.experience import ExperienceMemory
from aigrid.store.experience import ExampleRecord

# Fewer verified specs than this and nothing is learned: the vote decides.
MIN_EXAMPLES = 20
# A tool needs this many descriptions that granted it, and one that did not, to get a model.
MIN_GRANTS = 3
# Weak regularisation: the descriptions are short and their tool words are few and telling.
_C = 10.0


@dataclass(frozen=True)
class ToolModels:
    """The fitted models: one yes-or-no per tool, over one shared vocabulary."""

    vectorizer: Any
    models: dict[str, Any]

    def choose(self, text: str) -> dict[str, bool]:
        """Each known tool, and whether ``text`` needs it."""
        row = self.vectorizer.transform([text])
        return {tool: bool(model.predict(row)[0]) for tool, model in self.models.items()}


def fit(examples: Sequence[tuple[str, Sequence[str]]]) -> ToolModels | None:
    """Models from (description, granted tools) pairs; None with too few pairs to learn from."""
    if len(examples) < MIN_EXAMPLES:
        return None
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = [text for text, _ in examples]
    vectorizer = TfidfVectorizer(sublinear_tf=True)
    matrix = vectorizer.fit_transform(texts)
    models: dict[str, Any] = {}
    for tool in sorted({t for _, tools in examples for t in tools}):
        labels = [tool in tools for _, tools in examples]
        if sum(labels) < MIN_GRANTS or all(labels):
            continue
        # Balanced: most tools are granted by a few descriptions in a hundred.
        model = LogisticRegression(C=_C, class_weight="balanced", max_iter=2000)
        models[tool] = model.fit(matrix, labels)
    return ToolModels(vectorizer, models)


def _pairs(records: Sequence[ExampleRecord]) -> list[tuple[str, list[str]]]:
    return [(r.text, [str(t) for t in r.example.get("tools") or []]) for r in records]


class LearnedToolChoice:
    """The compiler's ``ToolChoice``: the tools the tenant's verified specs say a description needs."""

    def __init__(self, memory: ExperienceMemory) -> None:
        self._memory = memory
        self._locks: dict[int, asyncio.Lock] = {}

    async def __call__(self, tenant_id: int, text: str) -> dict[str, bool]:
        """Each tool the examples taught about, and whether ``text`` needs it; {} when none did."""
        if not self._memory.enabled:
            return {}
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:  # one fit per change, however many compiles wait for it
            index = await self._memory.examples(tenant_id, "spec")
            models: ToolModels | None = index.derived.get("tools")
            if "tools" not in index.derived:
                records = list(index.records.values())
                models = await asyncio.to_thread(fit, _pairs(records))
                if len(index.records) == len(records):  # else an example came meanwhile: fit again next time
                    index.derived["tools"] = models
        return {} if models is None else models.choose(text)
