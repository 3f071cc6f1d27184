"""The server's side of an engine process: start it, talk to it, and start it again when it dies.

As vLLM's engine core, SGLang's scheduler and Ollama's runner do, the model runs in a process of
its own (``worker.py``): a fault in native code (SIGSEGV), a kill or the out-of-memory killer end
that process, never the server. The requests it had in hand then fail with a retryable 503 marked
``interrupted``, the deployment is told it is down (its breaker opens and the router fails over),
and a new process is started at once, then with a back-off that doubles while it keeps dying.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aigrid.clock import now_us
from aigrid.grid.backends.base import BackendError, EngineStats
from aigrid.grid.backends.embedded_prompt import GenerateRequest
from aigrid.grid.engine.jobs import LAST_EVENTS, EmbedRequest, Event, Failed, Started
from aigrid.grid.engine.wire import ChannelError, EngineOrder, encode, read_message

logger = logging.getLogger(__name__)

# A process that served this long before it died starts again at once; one that dies sooner
# waits 0.5 s, then twice as long each time, up to the cap.
_STABLE_S = 60.0
_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
# How long a process told to stop may take to finish its step and free the model.
_STOP_GRACE_S = 10.0
_NATIVE_FAULTS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}


class EngineStartError(RuntimeError):
    """An engine process that could not load its model, or died before it was ready."""


def exit_cause(returncode: int) -> str:
    """How a process ended, in words: ``killed by SIGSEGV (a fault in native code)``."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"killed by signal {-returncode}"
    if sig in _NATIVE_FAULTS:
        return f"killed by {sig.name} (a fault in native code)"
    if sig == signal.SIGKILL:
        return "killed by SIGKILL (out of memory, or killed by hand)"
    return f"killed by {sig.name}"


def restart_delay(crashes: int) -> float:
    """Seconds to wait before the next start after ``crashes`` deaths in a row."""
    if crashes <= 1:
        return 0.0
    return float(min(_MAX_BACKOFF_S, _FIRST_BACKOFF_S * 2 ** (crashes - 2)))


class RemoteJob:
    """A request sent to the engine process; its events reach the event loop through a queue."""

    __slots__ = ("_events", "_owner", "cancelled", "id", "request", "started")

    def __init__(self, job_id: int, request: GenerateRequest | EmbedRequest, owner: EngineProcess) -> None:
        self.id = job_id
        self.request = request
        self._owner = owner
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self.started = False
        self.cancelled = False

    def cancel(self) -> None:
        """Ask the engine to drop this job at its next step, or at once if it still waits."""
        if not self.cancelled:
            self.cancelled = True
            self._owner.cancel(self)

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
            if isinstance(batch[-1], LAST_EVENTS):
                return


@dataclass(eq=False)
class _Process:
    popen: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    started_at: float

    @property
    def pid(self) -> int:
        return self.popen.pid


class EngineProcess:
    """One engine process for an embedded deployment, and the requests it has in hand.

    ``on_change`` hears the cause when the process dies and None when a new one is ready.
    """

    def __init__(self, order: EngineOrder, on_change: Callable[[str | None], None]) -> None:
        self._order = order
        self._name = order.name
        self._on_change = on_change
        self._jobs: dict[int, RemoteJob] = {}
        self._ids = itertools.count(1)
        self._current: _Process | None = None
        self._cache = EngineStats(0, 0, 0, 0, 0)
        self._crashes = 0
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0
        self.last_exit: str | None = None
        self.last_exit_at_us: int | None = None

    @property
    def state(self) -> str:
        """``running``; ``restarting`` between processes; ``stopped``; ``starting`` before the first."""
        if self._closing:
            return "stopped"
        if self._current is not None:
            return "running"
        return "restarting" if self._supervisor is not None else "starting"

    @property
    def pid(self) -> int | None:
        """The running process's pid; None while there is none."""
        return self._current.pid if self._current is not None else None

    async def start(self, on_progress: Callable[[float], None] | None = None) -> None:
        """Start the first process and wait until its model is loaded; ``on_progress`` hears how far."""
        process = await self._launch(on_progress)
        self._current = process
        self._supervisor = asyncio.create_task(self._supervise(process), name=f"engine:{self._name}")

    def submit(self, request: GenerateRequest | EmbedRequest) -> RemoteJob:
        """Send a request to the engine; a full queue or a process being restarted is a retryable 503."""
        process = self._current
        if process is None or self._closing:
            what = "shutting down" if self._closing else f"restarting its engine ({self.last_exit})"
            raise BackendError(f"{self._name}: the embedded model is {what}", retryable=True, status=503)
        limit = self._order.queue_size
        if self._waiting() >= limit:
            raise BackendError(
                f"{self._name}: the embedded model is busy ({limit} requests already waiting)",
                retryable=True,
                status=503,
                overloaded=True,
            )
        job = RemoteJob(next(self._ids), request, self)
        self._jobs[job.id] = job
        process.writer.write(encode(("submit", job.id, request)))
        return job

    def cancel(self, job: RemoteJob) -> None:
        """Tell the engine a job was given up (a no-op once it ended)."""
        if job.id in self._jobs and self._current is not None:
            self._current.writer.write(encode(("cancel", job.id)))

    def _waiting(self) -> int:
        return sum(1 for j in self._jobs.values() if not j.started and not j.cancelled)

    def stats(self) -> EngineStats:
        """Running and waiting requests as this side counts them, the cache as the engine last said."""
        running = sum(1 for j in self._jobs.values() if j.started and isinstance(j.request, GenerateRequest))
        cache = self._cache
        return EngineStats(
            running=running,
            waiting=self._waiting(),
            cached_sequences=cache.cached_sequences,
            cached_tokens=cache.cached_tokens,
            moves=cache.moves,
            state=self.state,
            pid=self.pid,
            restarts=self.restarts,
            last_exit=self.last_exit,
            last_exit_at_us=self.last_exit_at_us,
            cpu_extra_buffers=self._order.spec.buffers.label,
        )

    async def stop(self) -> None:
        """Stop the process (its requests fail as shutting down) and wait for it to exit."""
        if self._closing:
            return
        self._closing = True
        process = self._current
        if process is not None:
            process.writer.write(encode(("stop",)))
            await _reap(process.popen, _STOP_GRACE_S)
        elif self._supervisor is not None:
            # Between processes: waiting out a back-off or loading a new one, which stops with it.
            self._supervisor.cancel()
        if self._supervisor is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._fail_all(BackendError(f"{self._name}: shutting down", retryable=True, status=503))

    async def _launch(self, on_progress: Callable[[float], None] | None) -> _Process:
        parent, child = socket.socketpair()
        try:
            # Its own session: a terminal's Ctrl-C is the server's to handle, not the engine's.
            popen = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-m", "aigrid.grid.engine.worker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=parent)
            writer.write(encode(("start", self._order)))
            while True:
                message = await read_message(reader)
                if message is None:
                    cause = exit_cause(await _reap(popen, _STOP_GRACE_S))
                    raise EngineStartError(f"{self._name}: the engine process {cause} while loading")
                if not isinstance(message, tuple) or not message:
                    raise ChannelError(f"an engine process sent {message!r} while loading")
                kind = message[0]
                if kind == "progress" and on_progress is not None:
                    _report(on_progress, float(message[1]))
                elif kind == "ready":
                    return _Process(popen, reader, writer, time.monotonic())
                elif kind == "unusable":
                    await _reap(popen, _STOP_GRACE_S)
                    raise EngineStartError(f"{self._name}: {message[1]}")
        except BaseException:
            if popen.poll() is None:
                popen.kill()
                await _reap(popen, _STOP_GRACE_S)
            parent.close()
            raise

    async def _supervise(self, process: _Process) -> None:
        """Follow each process until it dies, then start the next, until the engine is stopped."""
        current: _Process | None = process
        while current is not None:
            cause = await self._follow(current)
            current = None if self._closing else await self._restart(current, cause)

    async def _follow(self, process: _Process) -> str:
        """Deliver the process's events until it ends; how it ended."""
        hung: float | None = None
        try:
            while True:
                # With requests in hand the engine reports every step; silence that long is a hang.
                limit = self._order.step_timeout_s if self._jobs else None
                try:
                    # A timer on this task, not a task of its own: this runs once per decode step.
                    async with asyncio.timeout(limit):
                        message = await read_message(process.reader)
                except TimeoutError:
                    hung = limit
                    logger.error(
                        "%s: the engine process (pid %d) finished no step for %.0f s with %d request(s)"
                        " in hand; killing it",
                        self._name,
                        process.pid,
                        limit,
                        len(self._jobs),
                    )
                    process.popen.kill()
                    break
                if message is None:
                    break
                if isinstance(message, tuple) and message and message[0] == "events":
                    self._deliver(message[1], message[2])
        except ChannelError:
            logger.exception("%s: the engine process sent a corrupt frame; stopping it", self._name)
            process.popen.kill()
        code = await _reap(process.popen, _STOP_GRACE_S)
        process.writer.close()
        self._current = None
        if hung is not None:
            return f"finished no step for {hung:.0f} s with requests in hand (hung), and was killed"
        return exit_cause(code)

    def _deliver(self, items: list[tuple[int, Event]], stats: EngineStats) -> None:
        self._cache = stats
        for job_id, event in items:
            job = self._jobs.get(job_id)
            if job is None:
                continue
            if isinstance(event, Started):
                job.started = True
            elif isinstance(event, LAST_EVENTS):
                del self._jobs[job_id]
            job.deliver(event)

    async def _restart(self, dead: _Process, cause: str) -> _Process | None:
        """Fail what the dead process had, then start new ones with back-off until one is ready."""
        self.last_exit, self.last_exit_at_us = cause, now_us()
        lived = time.monotonic() - dead.started_at
        self._crashes = 1 if lived >= _STABLE_S else self._crashes + 1
        interrupted = len(self._jobs)
        logger.error(
            "%s: the engine process (pid %d) %s after %.0f s; %d request(s) interrupted; restarting",
            self._name,
            dead.pid,
            cause,
            lived,
            interrupted,
        )
        self._cache = EngineStats(0, 0, 0, 0, self._cache.moves)
        self._fail_all(
            BackendError(
                f"{self._name}: the engine process {cause}; retry shortly",
                retryable=True,
                status=503,
                interrupted=True,
            )
        )
        self._on_change(f"the engine process {cause}")
        while not self._closing:
            delay = restart_delay(self._crashes)
            if delay:
                await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                process = await self._launch(None)
            except EngineStartError as exc:
                self._crashes += 1
                self.last_exit, self.last_exit_at_us = str(exc), now_us()
                logger.error("%s: restarting the engine failed: %s", self._name, exc)
                continue
            if self._closing:
                process.writer.write(encode(("stop",)))
                await _reap(process.popen, _STOP_GRACE_S)
                return None
            self.restarts += 1
            self._current = process
            logger.warning(
                "%s: the engine process is back (pid %d), ready in %.1f s; restarts so far: %d",
                self._name,
                process.pid,
                time.monotonic() - started,
                self.restarts,
            )
            self._on_change(None)
            return process
        return None

    def _fail_all(self, error: BackendError) -> None:
        jobs, self._jobs = self._jobs, {}
        event = Failed.of(error)
        for job in jobs.values():
            job.deliver(event)


def _report(on_progress: Callable[[float], None], fraction: float) -> None:
    try:
        on_progress(fraction)
    except Exception:
        # Only a display is told: its fault must not stop the model from loading.
        logger.exception("the load progress callback failed")


async def _reap(popen: subprocess.Popen[bytes], grace_s: float) -> int:
    """The exit status of a process that is ending; killed if it takes longer than ``grace_s``."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(popen.wait), grace_s)
    except TimeoutError:
        popen.kill()
        return await asyncio.to_thread(popen.wait)
