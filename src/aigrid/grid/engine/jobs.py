"""Requests in the engine's hands and the events it sends back about them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from aigrid.grid.backends.base import BackendError
from aigrid.grid.backends.embedded_prompt import GenerateRequest

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """Texts to embed."""

    texts: list[str]


@dataclass(frozen=True, slots=True)
class Started:
    """The request got a sequence; ``cached_tokens`` of its prompt came from the prefix cache."""

    cached_tokens: int


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
    """A request the engine could not finish: a refusal (``fault`` False) or an error inside the model.

    Plain fields rather than the exception itself, so that it crosses to the server's process.
    """

    message: str
    fault: bool = True
    retryable: bool = False
    status: int = 500
    overloaded: bool = False
    interrupted: bool = False

    @classmethod
    def of(cls, error: Exception) -> Failed:
        """The event for an error raised while the engine worked on a request."""
        if isinstance(error, BackendError):
            return cls(
                error.message, False, error.retryable, error.status, error.overloaded, error.interrupted
            )
        return cls(str(error) or type(error).__name__)

    def error(self, name: str) -> BackendError:
        """The error the backend of deployment ``name`` raises for this event."""
        if self.fault:
            message = f"{name}: the embedded model failed: {self.message}"
            return BackendError(message, retryable=False, status=500)
        return BackendError(
            self.message,
            retryable=self.retryable,
            status=self.status,
            overloaded=self.overloaded,
            interrupted=self.interrupted,
        )


Event = Started | Tokens | Finished | Embeddings | Failed
LAST_EVENTS = (Finished, Embeddings, Failed)
Sink = Callable[[list[tuple[int, Event]]], None]


class Job:
    """A request in the engine's hands, known by the id its client gave it."""

    __slots__ = ("_cancelled", "_on_cancel", "id", "request")

    def __init__(
        self, job_id: int, request: GenerateRequest | EmbedRequest, on_cancel: Callable[[Job], None]
    ) -> None:
        self.id = job_id
        self.request = request
        self._on_cancel = on_cancel
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """Whether the client gave the job up."""
        return self._cancelled

    def cancel(self) -> None:
        """Drop this job at the engine's next step, or at once if it still waits."""
        if not self._cancelled:
            self._cancelled = True
            self._on_cancel(self)


class Outbox:
    """The events of one engine step, handed to the sink in one call.

    One message per step instead of one per token: the server's event loop then wakes once per
    step, while the engine is already inside the next llama_decode.
    """

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._items: list[tuple[int, Event]] = []

    def put(self, job: Job, event: Event) -> None:
        """Keep an event for the next flush."""
        self._items.append((job.id, event))

    def flush(self, heartbeat: bool = False) -> None:
        """Send what was kept; with ``heartbeat``, an empty message when nothing was (a step ended)."""
        if self._items or heartbeat:
            items, self._items = self._items, []
            self._sink(items)
