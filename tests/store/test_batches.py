"""The Batcher: calls that arrive while a batch is out go together in the next one."""

from __future__ import annotations

import asyncio

import pytest

from aigrid.store.batches import Batcher


class RecordingRunner:
    """A batch function that records each batch and answers each item from ``answer``."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, items: list[str]) -> list[str | BaseException]:
        self.batches.append(list(items))
        await self.gate.wait()
        return [ValueError(f"bad {i}") if i.startswith("bad") else i.upper() for i in items]


async def test_calls_that_arrive_while_a_batch_is_out_go_together_next() -> None:
    runner = RecordingRunner()
    batcher: Batcher[str, str] = Batcher(runner)
    runner.gate.clear()
    first = asyncio.create_task(batcher("a"))
    await asyncio.sleep(0.01)  # "a" is out, alone: a lone call waits for no one
    rest = [asyncio.create_task(batcher(x)) for x in ("b", "c", "d")]
    await asyncio.sleep(0.01)
    runner.gate.set()
    assert [await first, *[await r for r in rest]] == ["A", "B", "C", "D"]
    assert runner.batches == [["a"], ["b", "c", "d"]]


async def test_one_items_error_is_its_own_and_a_failed_batch_is_everyones() -> None:
    runner = RecordingRunner()
    batcher: Batcher[str, str] = Batcher(runner)
    outcomes = await asyncio.gather(batcher("ok"), batcher("bad one"), return_exceptions=True)
    assert outcomes[0] == "OK" and isinstance(outcomes[1], ValueError)

    async def broken(items: list[str]) -> list[str | BaseException]:
        raise ConnectionError("the database went away")

    failing: Batcher[str, str] = Batcher(broken)
    outcomes = await asyncio.gather(failing("x"), failing("y"), return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert await batcher("after") == "AFTER", "the batcher goes on after a failure"


async def test_items_with_one_key_never_share_a_batch_and_keep_their_order() -> None:
    runner = RecordingRunner()
    batcher: Batcher[str, str] = Batcher(runner, key=lambda item: item[0], most=2)
    runner.gate.clear()
    calls = [asyncio.create_task(batcher(x)) for x in ("p1", "p2", "q1", "r1", "p3")]
    await asyncio.sleep(0.01)
    runner.gate.set()
    assert [await c for c in calls] == ["P1", "P2", "Q1", "R1", "P3"]
    assert runner.batches == [["p1", "q1"], ["p2", "r1"], ["p3"]]


async def test_a_caller_cancelled_before_its_batch_left_is_left_out() -> None:
    runner = RecordingRunner()
    batcher: Batcher[str, str] = Batcher(runner)
    runner.gate.clear()
    first = asyncio.create_task(batcher("a"))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(batcher("gone"))
    kept = asyncio.create_task(batcher("kept"))
    await asyncio.sleep(0.01)
    gone.cancel()
    runner.gate.set()
    assert (await first, await kept) == ("A", "KEPT")
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert runner.batches == [["a"], ["kept"]]


def test_a_batcher_outlives_an_event_loop() -> None:
    runner = RecordingRunner()
    batcher: Batcher[str, str] = Batcher(runner)
    assert asyncio.run(batcher("one")) == "ONE"
    assert asyncio.run(batcher("two")) == "TWO", "a new loop gets a new sender"
