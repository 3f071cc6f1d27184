#!/usr/bin/env python3
"""What the channel to the engine process costs: aigrid's own wire, between two real processes.

The engine process sends one frame per decode step (every running sequence's new tokens and the
cache figures); the server's event loop reads it with asyncio. This measures, over the same
socket pair and codec (``aigrid.grid.engine.wire``) the server uses:

- step frames: a child process sends frames of 1 and of 8 token events (one step of 1 and of 8
  streams) as fast as it can; the parent's asyncio loop reads and decodes them: frames/s and
  microseconds a frame, the server's share of one step;
- round trip: the parent sends a ``cancel``-sized order, the child answers with a one-event frame;
  the median and p99 of that latency (an order reaching the engine, an event coming back).

    .venv/bin/python bench/engine_channel.py [--frames 20000] [--pings 2000]

Compare the microseconds with a decode step: at 100 tokens/s a step of one stream takes 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time

from aigrid.grid.engine.wire import encode, read_message

CHILD = """
import socket, sys
from aigrid.grid.backends.base import EngineStats
from aigrid.grid.engine.jobs import Tokens
from aigrid.grid.engine.wire import encode, recv_message
sock = socket.socket(fileno=int(sys.argv[1]))
stats = EngineStats(0, 0, 2, 300, 0)
while (order := recv_message(sock)) is not None:
    if order[0] == "burst":
        _, frames, streams = order
        frame = encode(("events", [(i, Tokens(" word", 1)) for i in range(streams)], stats))
        for _ in range(frames):
            sock.sendall(frame)
    elif order[0] == "cancel":
        sock.sendall(encode(("events", [(order[1], Tokens(" word", 1))], stats)))
"""


async def measure(parent: socket.socket, frames: int, pings: int) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=parent)
    try:
        writer.write(encode(("burst", 1000, 8)))  # warm-up: both ends' code and buffers
        for _ in range(1000):
            await read_message(reader)
        for streams in (1, 8):
            writer.write(encode(("burst", frames, streams)))
            started = time.perf_counter()
            for _ in range(frames):
                message = await read_message(reader)
                assert isinstance(message, tuple) and len(message[1]) == streams
            elapsed = time.perf_counter() - started
            print(
                f"step frames of {streams} token event(s): {frames / elapsed:,.0f} frames/s,"
                f" {elapsed / frames * 1e6:.1f} µs a frame (sent, read and decoded)"
            )
        latencies = []
        for i in range(pings):
            started = time.perf_counter()
            writer.write(encode(("cancel", i)))
            await read_message(reader)
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99)]
        print(
            f"round trip (an order to the engine process, an event back): median"
            f" {statistics.median(latencies) * 1e6:.0f} µs, p99 {p99 * 1e6:.0f} µs over {pings}"
        )
    finally:
        writer.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--pings", type=int, default=2000)
    args = p.parse_args()
    parent, child = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(child.fileno())], pass_fds=(child.fileno(),))
    child.close()
    try:
        asyncio.run(measure(parent, args.frames, args.pings))
    finally:
        parent.close()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
