"""Reading and parsing a token request's JSON body without holding up the event loop.

A parser holds the interpreter lock for as long as it runs, even in a worker thread: orjson takes
about 45 ms for a 30 MB prompt, and every other request on the server waits that long. Bodies
that large are parsed in a child process instead; what comes back is one string or a few, whose
unpickling is a copy (a few ms).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sys
from typing import Any

import orjson
from starlette.types import Receive

from aigrid.errors import APIError, bad_request

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 2**20
# Deeper bodies are refused: nothing a model is asked needs it, and the JSON writers and schema
# walkers behind (orjson stops at 255 levels) would fail on it.
MAX_DEPTH = 128
# Above this a body is parsed off the event loop's thread; above the next, off its process.
THREAD_BODY_BYTES = 64 * 2**10
PROCESS_BODY_BYTES = 4 * 2**20
FRAME_HEADER_BYTES = 8
# The child's answers are read in pieces of this size: one read of 30 MB would copy it in one go.
_READ_BYTES = 2**20


def parsed(raw: bytes | bytearray) -> Any:
    """The JSON body; a 400 when it is not JSON or is nested deeper than ``MAX_DEPTH``."""
    outcome, value = parse_outcome(raw)
    if outcome == "refused":
        raise bad_request(value)
    return value


def parse_outcome(raw: bytes | bytearray) -> tuple[str, Any]:
    """``("parsed", body)`` or ``("refused", why)``: plain values, so a child process can send them."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return "refused", f"The request body is not valid JSON: {exc}"
    # Nesting needs an opening bracket per level: most bodies have too few to be walked at all.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and deeper_than(body, MAX_DEPTH):
        return "refused", f"The request body is nested deeper than {MAX_DEPTH} levels."
    return "parsed", body


def deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` deep (without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node if type(node) is list else ()
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


async def read_body(receive: Receive, limit: int) -> bytes | bytearray:
    """The whole body, refused with a 413 past ``limit`` bytes.

    The chunks are added to one buffer as they arrive: joining 30 MB of chunks at the end, or
    allocating it all at once, would hold the event loop for tens of milliseconds in one go.
    """
    message = await receive()
    first: bytes = message.get("body", b"")
    if not message.get("more_body"):
        _check_size(len(first), limit)
        return first
    buffer = bytearray(first)
    while message.get("more_body"):
        message = await receive()
        buffer += message.get("body", b"")
        _check_size(len(buffer), limit)
    return buffer


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        message = f"The request body is larger than {limit // 2**20} MiB."
        raise APIError(413, message, code="request_too_large")


class BodyParser:
    """Parses bodies where they cost the other requests least: inline, in a thread, or in a child."""

    def __init__(self) -> None:
        self._child: asyncio.subprocess.Process | None = None
        self._turn = asyncio.Lock()
        self._reaping: set[asyncio.Future[int]] = set()

    async def parse(self, raw: bytes | bytearray) -> Any:
        """The JSON body (a 400 for what ``parsed`` refuses)."""
        if len(raw) < THREAD_BODY_BYTES:
            return parsed(raw)
        if len(raw) < PROCESS_BODY_BYTES:
            return await asyncio.to_thread(parsed, raw)
        try:
            async with self._turn:
                try:
                    answer = await self._ask_child(raw)
                except BaseException:
                    # Cut off mid-frame (an error, a cancelled request): its stream is out of step.
                    self._discard()
                    raise
        except (OSError, EOFError, asyncio.IncompleteReadError):
            # The child died (killed, out of memory): this body is parsed here rather than lost,
            # and a new child serves the next one.
            log.warning("the body parser's process died; parsing this body in a thread")
            self._discard()
            return await asyncio.to_thread(parsed, raw)
        outcome, value = pickle.loads(answer)
        if outcome == "refused":
            raise bad_request(value)
        return value

    async def _ask_child(self, raw: bytes | bytearray) -> bytearray:
        child = await self._started()
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(len(raw).to_bytes(FRAME_HEADER_BYTES, "big"))
        with memoryview(raw) as view:
            # Written in pieces, each drained: the pipe's buffer never holds a copy of it all.
            for start in range(0, len(view), _READ_BYTES):
                child.stdin.write(view[start : start + _READ_BYTES])
                await child.stdin.drain()
        size = int.from_bytes(await child.stdout.readexactly(FRAME_HEADER_BYTES), "big")
        # Grown piece by piece: allocating it whole would fault in every page of it in one go.
        answer = bytearray()
        while len(answer) < size:
            piece = await child.stdout.read(min(_READ_BYTES, size - len(answer)))
            if not piece:
                raise EOFError("the body parser's process ended mid-answer")
            answer += piece
        return answer

    async def _started(self) -> asyncio.subprocess.Process:
        if self._child is None or self._child.returncode is not None:
            self._child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "aigrid.api.body_child",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        return self._child

    def _discard(self) -> None:
        """Kill the child (if any); it is reaped in the background and a new one starts when needed."""
        child, self._child = self._child, None
        if child is not None and child.returncode is None:
            child.kill()
            reaped = asyncio.ensure_future(child.wait())
            self._reaping.add(reaped)
            reaped.add_done_callback(self._reaping.discard)

    async def aclose(self) -> None:
        """Stop the child process, if one was started, and wait until it is gone."""
        self._discard()
        await asyncio.gather(*self._reaping, return_exceptions=True)
