"""A lean HTTP/1.1 keep-alive client for talking to upstream model servers.

Measured on the 2-core machines aigrid targets, a round trip through aiohttp's client costs about
300 microseconds of Python beyond the network, more than the whole latency budget aigrid has for
a request. This client does only what a gateway needs: POST a body over pooled keep-alive
connections (plain or TLS), read the whole answer or stream it, and give up on an upstream that
goes quiet. Parsing is httptools (llhttp), the parser uvicorn uses.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

_STREAM_HIGH_WATER = 64


class HTTPError(Exception):
    """The upstream could not be reached or broke the exchange."""


class _Exchange:
    """One request's view of its response as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, streaming: bool) -> None:
        self.head: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.chunks: asyncio.Queue[bytes | None] | None = asyncio.Queue() if streaming else None
        self.received_any = False
        self.last_activity = time.monotonic()
        self.watchdog: asyncio.TimerHandle | None = None

    def stop_watchdog(self) -> None:
        """The exchange is over: no more idle checks."""
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None


class _Connection(asyncio.Protocol):
    """A keep-alive connection carrying one exchange at a time."""

    def __init__(self, pool: ConnectionPool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._exchange: _Exchange | None = None
        self._paused = False
        self.closed = False
        self.used = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HTTPError(f"connection lost: {exc}" if exc else "connection closed by upstream"))
        self._pool.forget(self)

    def data_received(self, data: bytes) -> None:
        exchange = self._exchange
        if exchange is not None:
            exchange.received_any = True
            exchange.last_activity = time.monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HTTPError(f"malformed response: {exc}"))
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        """Parser callback."""
        if self._exchange is not None:
            self._exchange.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        """Parser callback."""
        exchange = self._exchange
        if exchange is not None:
            exchange.status = self._parser.get_status_code()
            if not exchange.head.done():
                exchange.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        """Parser callback."""
        exchange = self._exchange
        if exchange is None:
            return
        if exchange.chunks is None:
            exchange.body.append(body)
            return
        exchange.chunks.put_nowait(body)
        if exchange.chunks.qsize() > _STREAM_HIGH_WATER and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True

    def on_message_complete(self) -> None:
        """Parser callback: the response is whole; the connection goes back to the pool."""
        exchange, self._exchange = self._exchange, None
        if exchange is None:
            return
        exchange.stop_watchdog()
        if exchange.chunks is not None:
            exchange.chunks.put_nowait(None)
        if not exchange.done.done():
            exchange.done.set_result(None)
        if self._parser.should_keep_alive() and not self.closed:
            self._pool.release(self)
        else:
            self.abort()

    def resume(self) -> None:
        """Let data flow again once a slow stream reader has caught up."""
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    def send(self, data: bytes, exchange: _Exchange, timeout: float) -> None:
        """Write a request; ``exchange`` fails if the upstream stays silent for ``timeout``."""
        assert self._transport is not None
        self.used = True
        self._exchange = exchange
        exchange.watchdog = self._loop.call_later(timeout, self._check_idle, exchange, timeout)
        self._transport.write(data)

    def _check_idle(self, exchange: _Exchange, timeout: float) -> None:
        # One timer per exchange, re-armed only when it fires, rather than one per chunk.
        if exchange is not self._exchange:
            return
        idle = time.monotonic() - exchange.last_activity
        if idle >= timeout:
            self._fail(HTTPError(f"no data from upstream for {timeout:g}s"))
            self.abort()
            return
        exchange.watchdog = self._loop.call_later(timeout - idle, self._check_idle, exchange, timeout)

    def _fail(self, exc: Exception) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is None:
            return
        exchange.stop_watchdog()
        for fut in (exchange.head, exchange.done):
            if not fut.done():
                fut.set_exception(exc)
        # Nobody may await ``done`` of a failed head; mark its exception as seen.
        exchange.done.exception()
        if exchange.chunks is not None:
            exchange.chunks.put_nowait(None)

    def abort(self) -> None:
        """Drop the connection (one with an unread body cannot be reused)."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
        self._pool.forget(self)


class Response:
    """An upstream response: status, headers, and the body whole or as it streams."""

    def __init__(self, conn: _Connection, exchange: _Exchange) -> None:
        self._conn = conn
        self._exchange = exchange
        self.status = exchange.status
        self.headers = exchange.headers

    async def read(self) -> bytes:
        """The whole body."""
        if self._exchange.chunks is None:
            await self._exchange.done
            return b"".join(self._exchange.body)
        return b"".join([chunk async for chunk in self.iter_chunks()])

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; raises HTTPError if the upstream breaks off."""
        exchange = self._exchange
        chunks = exchange.chunks
        assert chunks is not None, "not a streamed response"
        while True:
            chunk = await chunks.get()
            if chunk is None:
                if exchange.done.done() and exchange.done.exception() is not None:
                    raise HTTPError(str(exchange.done.exception()))
                return
            # A reader that paused the upstream must not make the upstream look idle.
            exchange.last_activity = time.monotonic()
            if chunks.qsize() < _STREAM_HIGH_WATER // 2:
                self._conn.resume()
            yield chunk

    def close(self) -> None:
        """Give up the body; a connection with unread bytes is dropped, not reused."""
        if not self._exchange.done.done():
            self._conn.abort()


class ConnectionPool:
    """Keep-alive connections to one origin, at most ``limit`` open at once."""

    def __init__(self, base_url: str, *, limit: int = 256, connect_timeout: float = 5.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if tls else 80)
        self.base_path = parts.path.rstrip("/")
        self._ssl = ssl.create_default_context() if tls else None
        default_port = self.port == (443 if tls else 80)
        self._host_header = (self.host if default_port else f"{self.host}:{self.port}").encode("idna")
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _request_bytes(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> bytes:
        lines = [
            b"POST " + (self.base_path + path).encode() + b" HTTP/1.1",
            b"Host: " + self._host_header,
            b"Content-Length: " + str(len(body)).encode(),
        ]
        lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    async def post(
        self, path: str, body: bytes, headers: list[tuple[str, str]], *, stream: bool, idle_timeout: float
    ) -> Response:
        """POST and wait for the response head; ``idle_timeout`` bounds every silence from upstream."""
        data = self._request_bytes(path, body, headers)
        # Looked up once: on Python 3.11 every get_running_loop() costs a getpid() system call.
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        for attempt in range(2):
            conn = await self._acquire()
            reused = conn.used
            exchange = _Exchange(loop, stream)
            conn.send(data, exchange, idle_timeout)
            try:
                await exchange.head
            except HTTPError:
                # A kept-alive connection the upstream had already closed fails before any byte
                # arrives; the request was never processed, so sending it once more is safe.
                if reused and not exchange.received_any and attempt == 0:
                    continue
                raise
            return Response(conn, exchange)
        raise AssertionError("unreachable")

    async def _acquire(self) -> _Connection:
        while True:
            if self._closing:
                raise HTTPError("connection pool is closed")
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
            if len(self._open) < self._limit:
                return await self._connect()
            assert self._loop is not None
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self) -> _Connection:
        loop = self._loop or asyncio.get_running_loop()
        conn = _Connection(self, loop)
        self._open.add(conn)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                ),
                self._connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            self._open.discard(conn)
            self._wake_one()
            raise HTTPError(f"cannot connect to {self.host}:{self.port}: {exc or 'timed out'}") from exc
        return conn

    def release(self, conn: _Connection) -> None:
        """Take back a connection whose exchange is complete."""
        self._idle.append(conn)
        self._wake_one()

    def forget(self, conn: _Connection) -> None:
        """Drop a closed connection."""
        self._open.discard(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close every connection."""
        self._closing = True
        for conn in list(self._open):
            conn.abort()
        self._idle.clear()
        self._wake_one()
