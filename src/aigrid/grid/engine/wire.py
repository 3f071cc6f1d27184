"""The channel between the server and an engine process: length-prefixed pickles over a socket pair.

Both ends are this package's own code, started by the server, so pickle is safe here and it is
the fastest standard codec for the small tuples and dataclasses that cross (one frame per engine
step). Messages, server to engine: ``("start", EngineOrder)`` once, then ``("submit", id, request)``,
``("cancel", id)`` and ``("stop",)``. Engine to server: ``("progress", fraction)`` while loading,
``("ready", pid)`` or ``("unusable", message)``, then ``("events", [(id, event), ...], stats)``.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from dataclasses import dataclass

from aigrid.grid.engine.model import ModelSpec

_HEADER = struct.Struct("<I")
# Far above any real message (a prompt of a full context is a few hundred kB); a larger length
# means the stream is corrupt.
MAX_FRAME = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class EngineOrder:
    """What an engine process is asked to run: the model and the server's name and queue for it."""

    spec: ModelSpec
    queue_size: int
    name: str
    step_timeout_s: float


class ChannelError(Exception):
    """The other end sent something that is not a frame of this protocol."""


def encode(message: object) -> bytes:
    """A message as one frame."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def _decode(body: bytes) -> object:
    try:
        return pickle.loads(body)
    except Exception as exc:
        raise ChannelError(f"an unreadable frame of {len(body)} bytes: {exc}") from exc


def _length(header: bytes) -> int:
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ChannelError(f"a frame of {size} bytes announced")
    return int(size)


async def read_message(reader: asyncio.StreamReader) -> object | None:
    """The next message, or None once the other end has closed (or died)."""
    try:
        header = await reader.readexactly(_HEADER.size)
        return _decode(await reader.readexactly(_length(header)))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def recv_message(sock: socket.socket) -> object | None:
    """The next message, blocking; None once the other end has closed."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    body = _recv_exactly(sock, _length(header))
    return None if body is None else _decode(body)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        try:
            count = sock.recv_into(view[got:])
        except ConnectionError:
            return None
        if count == 0:
            return None
        got += count
    return bytes(buffer)
