"""Embedding requests on the engine thread, a few inputs between two decode steps."""

from __future__ import annotations

import ctypes
import logging
from collections import deque
from dataclasses import dataclass, field

import llama_cpp
import numpy as np

from aigrid.grid.engine.jobs import Embeddings, EmbedRequest, Failed, Job, Outbox
from aigrid.grid.engine.model import LoadedModel, ModelSpec, tokenize

logger = logging.getLogger(__name__)

# Inputs embedded between two decode steps: a request of thousands of inputs slows the running
# generations down instead of stopping them until it is done.
_CHUNK = 8


class Embedder:
    """Mean-pooled, unit-length embeddings from a second context on the generating model's weights.

    Sharing the loaded weights means one load, under the one buffer choice, and no second copy
    of the model in memory.
    """

    def __init__(self, model: LoadedModel, spec: ModelSpec) -> None:
        self._size = size = spec.embed_context
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = size
        params.n_seq_max = _CHUNK
        # One cache for all sequences, so a single input may use the whole context.
        params.kv_unified = True
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        params.n_threads = params.n_threads_batch = spec.threads
        params.no_perf = True
        self._context = llama_cpp.llama_init_from_model(model.model, params)
        if not self._context:
            raise RuntimeError(f"llama.cpp could not make an embedding context of {size} tokens")
        self._vocab = model.vocab.handle
        self._dims = int(llama_cpp.llama_model_n_embd(model.model))
        self._memory = llama_cpp.llama_get_memory(self._context)
        self._batch = llama_cpp.llama_batch_init(size, 0, 1)

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """The vectors of up to a chunk of texts, and the tokens they took."""
        inputs = [
            tokenize(self._vocab, text.encode("utf-8"), add_special=True, parse_special=False)
            for text in texts
        ]
        vectors: list[list[float]] = []
        group: list[list[int]] = []
        for tokens in inputs:
            if len(tokens) > self._size:
                raise ValueError(
                    f"an input of {len(tokens)} tokens is longer than an embedding's {self._size}"
                )
            if sum(map(len, group)) + len(tokens) > self._size:
                vectors += self._decode(group)
                group = []
            group.append(tokens)
        if group:
            vectors += self._decode(group)
        return vectors, sum(map(len, inputs))

    def _decode(self, group: list[list[int]]) -> list[list[float]]:
        batch = self._batch
        count = 0
        for seq, tokens in enumerate(group):
            for position, token in enumerate(tokens):
                batch.token[count] = token
                batch.pos[count] = position
                batch.n_seq_id[count] = 1
                batch.seq_id[count][0] = seq
                batch.logits[count] = True
                count += 1
        batch.n_tokens = count
        llama_cpp.llama_memory_clear(self._memory, True)
        status = llama_cpp.llama_decode(self._context, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} on an embedding batch")
        row = ctypes.c_float * self._dims
        vectors: list[list[float]] = []
        for seq in range(len(group)):
            pointer = llama_cpp.llama_get_embeddings_seq(self._context, seq)
            address = ctypes.cast(pointer, ctypes.c_void_p).value
            if address is None:
                raise RuntimeError(f"llama.cpp has no pooled embedding for sequence {seq}")
            vector = np.frombuffer(memoryview(row.from_address(address)), dtype=np.float32).astype(np.float64)
            norm = float(np.linalg.norm(vector))
            vectors.append((vector / norm if norm else vector).tolist())
        return vectors

    def close(self) -> None:
        """Free the batch and the context (the weights belong to the generating model)."""
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._context)


@dataclass(slots=True)
class _Pending:
    job: Job
    texts: list[str]
    vectors: list[list[float]] = field(default_factory=list)
    tokens: int = 0


class EmbeddingQueue:
    """Embedding requests taken in order, each answered when all its inputs are done."""

    def __init__(self, model: LoadedModel, spec: ModelSpec, outbox: Outbox) -> None:
        self._source = model
        self._spec = spec
        self._outbox = outbox
        self._pending: deque[_Pending] = deque()
        self._model: Embedder | None = None

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
                self._model = Embedder(self._source, self._spec)
            vectors, count = self._model.embed(pending.texts[start : start + _CHUNK])
        except Exception as exc:
            logger.exception("an embedding request failed inside the model")
            self._pending.popleft()
            self._outbox.put(pending.job, Failed.of(exc))
            return
        pending.vectors += vectors
        pending.tokens += int(count)
        if len(pending.vectors) == len(pending.texts):
            self._pending.popleft()
            self._outbox.put(pending.job, Embeddings(pending.vectors, pending.tokens))

    def fail(self, error: Exception) -> None:
        """Fail what is left."""
        for pending in self._pending:
            self._outbox.put(pending.job, Failed.of(error))
        self._pending.clear()

    def close(self) -> None:
        """Free the embedding model."""
        if self._model is not None:
            self._model.close()
            self._model = None
