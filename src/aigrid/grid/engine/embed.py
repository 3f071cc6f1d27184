"""Embedding requests on the engine thread, a few inputs between two decode steps."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aigrid.grid.engine.jobs import Embeddings, EmbedRequest, Failed, Job, Outbox
from aigrid.grid.engine.model import ModelSpec

logger = logging.getLogger(__name__)

# Inputs embedded between two decode steps: a request of thousands of inputs slows the running
# generations down instead of stopping them until it is done.
_CHUNK = 8


@dataclass(slots=True)
class _Pending:
    job: Job
    texts: list[str]
    vectors: list[list[float]] = field(default_factory=list)
    tokens: int = 0


class EmbeddingQueue:
    """Embedding requests taken in order, each answered when all its inputs are done."""

    def __init__(self, spec: ModelSpec, outbox: Outbox) -> None:
        self._spec = spec
        self._outbox = outbox
        self._pending: deque[_Pending] = deque()
        self._model: Any = None

    @property
    def busy(self) -> bool:
        """Whether some request still has inputs to embed."""
        return bool(self._pending)

    def add(self, job: Job, request: EmbedRequest) -> None:
        """Queue a request."""
        self._pending.append(_Pending(job, list(request.texts)))

    def work(self) -> None:
        """Embed the next few inputs of the first request; answer it when it is complete."""
        while self._pending and self._pending[0].job.cancelled:
            self._pending.popleft()
        if not self._pending:
            return
        pending = self._pending[0]
        start = len(pending.vectors)
        try:
            if self._model is None:
                self._model = self._spec.load_embedder()
            vectors, count = self._model.embed(
                pending.texts[start : start + _CHUNK], normalize=True, truncate=False, return_count=True
            )
        except Exception as exc:
            logger.exception("an embedding request failed inside the model")
            self._pending.popleft()
            self._outbox.put(pending.job, Failed(exc))
            return
        pending.vectors += vectors
        pending.tokens += int(count)
        if len(pending.vectors) == len(pending.texts):
            self._pending.popleft()
            self._outbox.put(pending.job, Embeddings(pending.vectors, pending.tokens))

    def fail(self, error: Exception) -> None:
        """Fail what is left."""
        for pending in self._pending:
            self._outbox.put(pending.job, Failed(error))
        self._pending.clear()

    def close(self) -> None:
        """Free the embedding model."""
        if self._model is not None:
            self._model.close()
            self._model = None
