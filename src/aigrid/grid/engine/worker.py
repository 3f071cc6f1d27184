"""The engine process: one embedded deployment's model, decoding for the server over a socket.

The server starts it as ``python -m aigrid.grid.engine.worker FD`` with one end of a socket pair
as FD (see ``wire.py`` for the messages). The model, the sampler and the engine's Python code all
run here, so a fault in native code ends this process alone and the server's event loop shares
no GIL with decoding. The main thread reads the server's orders; the engine thread decodes and
writes each step's events. The process ends when told to stop or when the server's end closes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading

from aigrid.grid.backends.base import BackendError
from aigrid.grid.engine.engine import BatchEngine
from aigrid.grid.engine.jobs import LAST_EVENTS, Event, Failed, Job
from aigrid.grid.engine.wire import EngineOrder, encode, recv_message

logger = logging.getLogger("aigrid.engine")


class _Channel:
    """The socket to the server; the engine thread and the main thread both write to it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._gone = False

    def send(self, message: object) -> None:
        frame = encode(message)
        with self._lock:
            if self._gone:
                return
            try:
                self.sock.sendall(frame)
            except OSError:
                # The server went away: nobody is left to tell, and the main thread sees the end.
                self._gone = True


def serve(sock: socket.socket) -> int:
    """Run the engine the first message orders until told to stop; the exit status."""
    channel = _Channel(sock)
    first = recv_message(sock)
    if not (isinstance(first, tuple) and len(first) == 2 and isinstance(first[1], EngineOrder)):
        logger.error("the first message was not an engine order: %r", first)
        return 2
    order = first[1]
    jobs: dict[int, Job] = {}
    engine: BatchEngine

    def sink(items: list[tuple[int, Event]]) -> None:
        for job_id, event in items:
            if isinstance(event, LAST_EVENTS):
                jobs.pop(job_id, None)
        channel.send(("events", items, engine.stats()))

    engine = BatchEngine(order.spec, order.queue_size, order.name, sink)
    try:
        engine.start(lambda fraction: channel.send(("progress", fraction)))
    except Exception as exc:
        channel.send(("unusable", str(exc) or type(exc).__name__))
        return 1
    channel.send(("ready", os.getpid()))
    try:
        while (message := recv_message(sock)) is not None:
            if not isinstance(message, tuple) or not message:
                logger.error("%s: an order this engine does not know: %r", order.name, message)
                continue
            kind = message[0]
            if kind == "submit":
                _, job_id, request = message
                job = jobs[job_id] = Job(job_id, request, engine.withdraw)
                try:
                    engine.submit(job)
                except BackendError as exc:
                    jobs.pop(job_id, None)
                    channel.send(("events", [(job_id, Failed.of(exc))], engine.stats()))
            elif kind == "cancel":
                cancelled = jobs.get(message[1])
                if cancelled is not None:
                    cancelled.cancel()
            elif kind == "stop":
                break
    finally:
        engine.stop()
    return 0


def main(argv: list[str]) -> int:
    """The process's entry point: ``worker FD``."""
    # Ctrl-C in a terminal reaches the whole process group; the server decides when this stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s %(levelname)s %(name)s[engine {os.getpid()}]: %(message)s",
    )
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m aigrid.grid.engine.worker FD (started by the aigrid server)", file=sys.stderr)
        return 2
    with socket.socket(fileno=int(argv[1])) as sock:
        return serve(sock)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
