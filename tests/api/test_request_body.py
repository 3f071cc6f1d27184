"""Request bodies: read whole, refused past the cap, and parsed off the event loop when large."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message

from aigrid.api.request_body import (
    PROCESS_BODY_BYTES,
    THREAD_BODY_BYTES,
    BodyParser,
    read_body,
)
from aigrid.errors import APIError


def _chunks(body: bytes, size: int = 65536) -> Any:
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]

    async def receive() -> Message:
        part = parts.pop(0)
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    return receive


def _prompt_body(size: int) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * size}]}).encode()


@pytest.mark.parametrize("size", [10, THREAD_BODY_BYTES + 1, PROCESS_BODY_BYTES + 1])
def test_a_body_of_any_size_is_read_and_parsed_whole(size: int) -> None:
    body = _prompt_body(size)

    async def go() -> Any:
        parser = BodyParser()
        try:
            return await parser.parse(await read_body(_chunks(body), 32 * 2**20))
        finally:
            await parser.aclose()

    parsed = asyncio.run(go())
    assert parsed["messages"][0]["content"] == "x" * size


def test_a_body_past_the_cap_is_a_413() -> None:
    with pytest.raises(APIError) as refused:
        asyncio.run(read_body(_chunks(b"x" * 300_000), 200_000))
    assert refused.value.status == 413
    assert refused.value.code == "request_too_large"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"model": "m", "prompt": "' + b"x" * PROCESS_BODY_BYTES + b'"', "not valid JSON"),
        (b"[" * 200 + b"]" * 200 + b" " * PROCESS_BODY_BYTES, "nested deeper than 128"),
        (b"[" * 200 + b"]" * 200, "nested deeper than 128"),
    ],
    ids=["large-truncated", "large-deep", "small-deep"],
)
def test_a_bad_body_is_a_400_whatever_its_size(body: bytes, says: str) -> None:
    async def go() -> None:
        parser = BodyParser()
        try:
            await parser.parse(body)
        finally:
            await parser.aclose()

    with pytest.raises(APIError) as refused:
        asyncio.run(go())
    assert refused.value.status == 400
    assert says in refused.value.message


def test_a_dead_parser_process_costs_no_body_and_is_replaced() -> None:
    body = _prompt_body(PROCESS_BODY_BYTES + 1)

    async def go() -> list[int]:
        parser = BodyParser()
        try:
            first = await parser.parse(body)
            child = parser._child  # the test reaches in to kill the child, as the OOM killer would
            assert child is not None
            child.kill()
            await child.wait()
            second = await parser.parse(body)
            third = await parser.parse(body)
            return [len(p["messages"][0]["content"]) for p in (first, second, third)]
        finally:
            await parser.aclose()

    assert asyncio.run(go()) == [PROCESS_BODY_BYTES + 1] * 3


def test_the_parser_process_handles_bodies_one_at_a_time() -> None:
    bodies = [_prompt_body(PROCESS_BODY_BYTES + n) for n in range(4)]

    async def go() -> list[int]:
        parser = BodyParser()
        try:
            answers = await asyncio.gather(*(parser.parse(b) for b in bodies))
            return [len(a["messages"][0]["content"]) for a in answers]
        finally:
            await parser.aclose()

    assert asyncio.run(go()) == [PROCESS_BODY_BYTES + n for n in range(4)]
