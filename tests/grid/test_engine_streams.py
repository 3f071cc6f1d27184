"""The prefix cache's choice of KV stream for each prompt, without a model."""

from __future__ import annotations

import random

import pytest

from aigrid.grid.engine.streams import MIN_COPY, REEVALUATE, StreamTable, common_prefix

SYSTEM = list(range(1000, 1200))  # a 200-token system prompt shared by the prompts below


def prompt(*tail: int) -> list[int]:
    return [*SYSTEM, *tail]


def test_common_prefix_matches_a_plain_loop() -> None:
    rng = random.Random(7)
    for _ in range(500):
        a = [rng.randrange(3) for _ in range(rng.randrange(40))]
        b = a[: rng.randrange(len(a) + 1)] + [rng.randrange(3) for _ in range(rng.randrange(40))]
        expected = next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )
        assert common_prefix(a, b) == expected


def test_first_prompt_starts_cold() -> None:
    table = StreamTable(4)
    placed = table.place(prompt(1, 2, 3))
    assert (placed.stream, placed.source, placed.reused) == (0, None, 0)


def test_a_finished_prompt_is_reused_in_place() -> None:
    table = StreamTable(4)
    first = table.place(prompt(1, 2, 3))
    table.streams[first.stream].tokens = prompt(1, 2, 3, 50, 51)  # prompt and answer decoded
    table.release(first.stream)
    again = table.place(prompt(7, 8, 9, 10, 11, 12))
    assert again.stream == first.stream and again.source is None
    assert again.reused == len(SYSTEM)


def test_the_last_prompt_tokens_are_always_decoded_again() -> None:
    table = StreamTable(2)
    first = table.place(prompt(1, 2))
    table.streams[first.stream].tokens = prompt(1, 2)
    table.release(first.stream)
    assert table.place(prompt(1, 2)).reused == len(prompt(1, 2)) - REEVALUATE


def test_a_running_prompt_is_copied_into_another_stream() -> None:
    table = StreamTable(4)
    running = table.place(prompt(1))
    table.streams[running.stream].tokens = prompt(1)
    later = table.place(prompt(2, 3, 4, 5, 6))
    assert later.source == running.stream and later.stream != running.stream
    assert later.reused == len(SYSTEM)
    assert table.streams[later.stream].tokens == SYSTEM


def test_a_short_shared_prefix_is_not_worth_a_copy() -> None:
    table = StreamTable(4)
    short = list(range(MIN_COPY - 1))
    running = table.place([*short, 1, 2, 3, 4, 5])
    table.streams[running.stream].tokens = [*short, 1, 2, 3, 4, 5]
    later = table.place([*short, 9, 9, 9, 9, 9])
    assert later.source is None and later.reused == 0


def test_new_prompts_fill_empty_streams_next_to_the_running_ones() -> None:
    table = StreamTable(6)
    placed = [table.place([i] * 10).stream for i in range(3)]
    assert placed == [0, 1, 2]


def test_the_least_recently_used_prefix_is_evicted_first() -> None:
    table = StreamTable(3)
    for i in range(3):
        placed = table.place([i] * 40)
        table.streams[placed.stream].tokens = [i] * 40
        table.release(placed.stream)
    # Stream 0 was used first, so an unrelated prompt overwrites it; the others stay cached.
    cold = table.place([9] * 40)
    assert (cold.stream, cold.reused) == (0, 0)
    table.release(cold.stream)
    assert table.place([2] * 40).reused == 40 - REEVALUATE


def test_a_gap_between_running_streams_is_filled_first() -> None:
    table = StreamTable(5)
    for i in range(4):
        table.place([i] * 10)
    table.release(1)
    table.streams[1].tokens = []
    assert table.place([8] * 10).stream == 1


def test_every_stream_busy_is_an_error() -> None:
    table = StreamTable(1)
    table.place([1] * 10)
    with pytest.raises(RuntimeError):
        table.place([2] * 10)


def test_a_short_match_does_not_overwrite_a_long_cached_prompt() -> None:
    table = StreamTable(3)
    template = [1, 2, 3]  # every chat prompt starts alike
    long_prompt = [*template, *SYSTEM]
    placed = table.place(long_prompt)
    table.streams[placed.stream].tokens = long_prompt
    table.release(placed.stream)
    other = table.place([*template, 7, 7, 7, 7, 7, 7])
    assert other.stream != placed.stream and other.reused == 0
    table.release(other.stream)
    assert table.place([*long_prompt, 9, 9, 9, 9, 9]).reused == len(long_prompt)


def test_a_gap_between_running_streams_is_closed_by_moving_the_last_one() -> None:
    table = StreamTable(6)
    for i in range(4):
        placed = table.place([i] * 40)
        table.streams[placed.stream].tokens = [i] * 40
    table.release(1)
    assert table.gap_move() == (3, 1)
    table.move(3, 1)
    assert [s.busy for s in table.streams[:4]] == [True, True, True, False]
    assert table.streams[1].tokens == [3] * 40, "the request's cells moved with it"
    assert table.place([3] * 40 + [5] * 8).reused == 40, "the old stream stays cached"
    assert table.gap_move() is None


def test_adjacent_running_streams_need_no_move() -> None:
    table = StreamTable(4)
    for i in range(2):
        table.place([i] * 40)
    assert table.gap_move() is None
