"""Requests in the engine's hands and the events they send back to the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

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
    """An error raised while the model worked."""

    error: Exception


Event = Started | Tokens | Finished | Embeddings | Failed
_LAST = (Finished, Embeddings, Failed)


class Job:
    """A request in the engine's hands; its events reach the event loop through an asyncio queue."""

    def __init__(
        self,
        request: GenerateRequest | EmbedRequest,
        loop: asyncio.AbstractEventLoop,
        on_cancel: Callable[[Job], None],
    ) -> None:
        self.request = request
        self.loop = loop
        self._on_cancel = on_cancel
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        """Whether the reader gave the job up."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Ask the engine to drop this job at its next step, or at once if it still waits."""
        if not self._cancelled.is_set():
            self._cancelled.set()
            self._on_cancel(self)

    def emit(self, event: Event) -> None:
        """Hand an event to the event loop; called on the engine's thread."""
        try:
            self.loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop is closed, so nobody is left to read
            self._cancelled.set()

    def deliver(self, event: Event) -> None:
        """Put an event in the queue; runs on the event loop."""
        self._events.put_nowait(event)

    async def batches(self) -> AsyncIterator[list[Event]]:
        """Events as they come, several at once when the reader fell behind; ends with the last."""
        while True:
            batch = [await self._events.get()]
            while not self._events.empty():
                batch.append(self._events.get_nowait())
            yield batch
            if isinstance(batch[-1], _LAST):
                return


class Outbox:
    """The events of one engine step, handed to each event loop in one call.

    One wake-up of the loop per step instead of one per token: the loop then does its work while
    the engine is inside llama_decode, which releases the GIL.
    """

    def __init__(self) -> None:
        self._items: list[tuple[Job, Event]] = []

    def put(self, job: Job, event: Event) -> None:
        """Keep an event for the next flush."""
        self._items.append((job, event))

    def flush(self) -> None:
        """Send what was kept."""
        if not self._items:
            return
        items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Event]]] = {}
        for job, event in items:
            by_loop.setdefault(job.loop, []).append((job, event))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the loop is closed, so nobody is left to read
                for job, _ in batch:
                    job.cancel()


def _deliver(batch: list[tuple[Job, Event]]) -> None:
    for job, event in batch:
        job.deliver(event)
