"""Group commit for a database server: concurrent calls of one kind run together, one batch at a time.

Every process step on PostgreSQL was a round trip, a commit and a thread hop of its own; 64
workers stepping at once paid that 64 times over, in the server's CPU more than in the
database's. A ``Batcher`` takes the calls that arrive while a batch is out and sends them as the
next one: under load a batch holds many calls, alone a call goes at once and waits for no timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class _Waiting(Generic[T, R]):
    item: T
    key: Hashable
    done: asyncio.Future[R] = field(repr=False)


class Batcher(Generic[T, R]):
    """Runs ``run_batch`` over the items that ``__call__`` gathered, one batch at a time.

    ``run_batch`` answers each item with its result or its exception, so one item's failure is
    that item's alone. Two items with the same ``key`` never share a batch (the later one waits
    for the next): a batch's statement may touch a row once. A caller cancelled before its batch
    left is dropped from it; once the batch is out, its item is written all the same, as a
    statement already sent would be.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        key: Callable[[T], Hashable] = id,
        most: int = 256,
    ) -> None:
        self._run_batch = run_batch
        self._key = key
        self._most = most
        self._waiting: list[_Waiting[T, R]] = []
        self._sender: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, item: T) -> R:
        """``item``'s result, once a batch that holds it has run."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a store outlives an event loop (a test's, a CLI command's)
            self._loop, self._waiting, self._sender = loop, [], None
        done: asyncio.Future[R] = loop.create_future()
        self._waiting.append(_Waiting(item, self._key(item), done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="store-batch")
        return await done

    async def _send(self) -> None:
        batch: list[_Waiting[T, R]] = []
        try:
            while self._waiting:
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    outcomes = await self._run_batch([w.item for w in batch])
                    if len(outcomes) != len(batch):
                        raise RuntimeError(f"a batch of {len(batch)} was answered {len(outcomes)} times")
                except Exception as exc:  # the whole batch failed: each of its callers hears why
                    outcomes = [exc] * len(batch)
                for waiting, outcome in zip(batch, outcomes, strict=True):
                    if waiting.done.done():  # its caller was cancelled meanwhile
                        continue
                    if isinstance(outcome, BaseException):
                        waiting.done.set_exception(outcome)
                    else:
                        waiting.done.set_result(outcome)
        except asyncio.CancelledError:  # the loop is closing: no caller is left waiting for nothing
            for waiting in [*batch, *self._waiting]:
                waiting.done.cancel()
            self._waiting = []
            raise

    def _next_batch(self) -> list[_Waiting[T, R]]:
        """Up to ``most`` waiting calls whose callers still wait, no two with one key."""
        batch: list[_Waiting[T, R]] = []
        later: list[_Waiting[T, R]] = []
        keys: set[Hashable] = set()
        for waiting in self._waiting:
            if waiting.done.done():
                continue
            if len(batch) >= self._most or waiting.key in keys:
                later.append(waiting)
            else:
                keys.add(waiting.key)
                batch.append(waiting)
        self._waiting = later
        return batch
