"""The contract every backend honours, and the values that cross it."""

from __future__ import annotations

import itertools
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aigrid.config import DeploymentConfig

Endpoint = Literal["chat", "completions", "embeddings"]


@dataclass(slots=True)
class Usage:
    """Token counts of one request; cached tokens are part of the prompt tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) answer: the JSON bytes for the client, the usage inside them, and
    (set by the grid's meter) what it cost."""

    body: bytes
    usage: Usage
    cost_micro: int = 0


@dataclass(slots=True)
class StreamProgress:
    """What a stream has produced so far; read by the meter while the stream runs."""

    usage: Usage = field(default_factory=Usage)
    first_token_at: float | None = None
    finished: bool = False

    def mark_token(self) -> None:
        """Note the time of the first produced token."""
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()


class StreamSession(ABC):
    """An open stream: server-sent-event frames ready to forward, with progress alongside."""

    def __init__(self) -> None:
        self.progress = StreamProgress()

    @abstractmethod
    def frames(self) -> AsyncIterator[bytes]:
        """SSE frames (``data: ...\\n\\n``) to send, without the closing ``data: [DONE]``."""

    @abstractmethod
    def close(self) -> None:
        """Stop producing and free what the stream holds; safe to call more than once."""


class BackendError(Exception):
    """A deployment could not answer. Retryable errors move the request to the next deployment."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int = 502,
        body: bytes | None = None,
        overloaded: bool = False,
        interrupted: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable or overloaded or interrupted
        self.status = status
        self.body = body
        # A full queue is load, not a fault: the next deployment is tried, but no breaker opens.
        self.overloaded = overloaded
        # The plant died with the request in hand: what was sent stands, the rest never comes.
        self.interrupted = interrupted


@dataclass(frozen=True, slots=True)
class EngineStats:
    """What a local engine holds now (running and waiting requests, prompts kept for reuse) and,
    once it runs in a process of its own, that process: its pid, restarts and the last one's cause.
    """

    running: int
    waiting: int
    cached_sequences: int
    cached_tokens: int
    moves: int
    state: str = "running"
    pid: int | None = None
    restarts: int = 0
    last_exit: str | None = None
    last_exit_at_us: int | None = None
    cpu_extra_buffers: str | None = None


# Told by a plant when it goes down (with the cause) and when it is back (None).
PlantListener = Callable[[str | None], None]


class Backend(ABC):
    """A plant: answers chat, completion and embedding requests for one deployment."""

    def __init__(self, name: str, config: DeploymentConfig) -> None:
        self.name = name
        self.config = config
        # Set by whoever routes to this plant, to hear of it going down and coming back.
        self.listener: PlantListener | None = None

    def tell(self, cause: str | None) -> None:
        """Tell the listener the plant went down (``cause``) or is back (None)."""
        if self.listener is not None:
            self.listener(cause)

    async def start(self) -> None:
        """Acquire what the backend needs (connections, a loaded model)."""

    async def close(self) -> None:
        """Release what the backend holds."""

    async def count_prompt_tokens(self, endpoint: Endpoint, body: dict[str, Any]) -> int | None:
        """The exact prompt size when the backend can tell, else None."""
        return None

    def engine_stats(self) -> EngineStats | None:
        """The in-process engine's state; None for a remote plant or before the engine starts."""
        return None

    @abstractmethod
    async def complete(self, endpoint: Endpoint, body: dict[str, Any], model: str) -> Completion:
        """Answer a whole request; ``model`` is the name the client asked for."""

    @abstractmethod
    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], model: str, include_usage: bool
    ) -> StreamSession:
        """Start a stream; errors before the first frame raise BackendError so the router can fail over."""


_ID_PREFIX = secrets.token_hex(6)
_ids = itertools.count(1)


def new_id(prefix: str, sep: str = "-") -> str:
    """A unique id in OpenAI's style, such as ``chatcmpl-...``.

    A random per-process prefix and a counter: unique across restarts without asking the
    kernel for randomness on every request, which is slow on some virtual machines.
    """
    return f"{prefix}{sep}{_ID_PREFIX}{next(_ids):010x}"
