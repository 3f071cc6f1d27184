"""The upstream HTTP client: keep-alive reuse, streaming, stale connections, silence, refusal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from aigrid.grid.backends.http_pool import ConnectionPool, HTTPError

BODY = b'{"model": "mock", "messages": [{"role": "user", "content": "hi"}]}'
JSON = [("Content-Type", "application/json")]


async def test_keeps_connections_alive_and_reads_whole_bodies(mock_upstream: str) -> None:
    pool = ConnectionPool(mock_upstream, limit=4)
    for _ in range(20):
        resp = await pool.post("/chat/completions", BODY, JSON, stream=False, idle_timeout=5)
        assert resp.status == 200 and b'"usage"' in await resp.read()
    assert len(pool._open) == 1
    await pool.close()


async def test_streams_arrive_in_chunks(mock_upstream: str) -> None:
    pool = ConnectionPool(mock_upstream)
    resp = await pool.post(
        "/chat/completions", BODY[:-1] + b', "stream": true}', JSON, stream=True, idle_timeout=5
    )
    data = b"".join([chunk async for chunk in resp.iter_chunks()])
    assert data.endswith(b"data: [DONE]\n\n")
    await pool.close()


async def test_concurrency_is_capped_by_the_limit(mock_upstream: str) -> None:
    pool = ConnectionPool(mock_upstream, limit=3)

    async def one() -> int:
        resp = await pool.post("/chat/completions", BODY, JSON, stream=False, idle_timeout=5)
        await resp.read()
        return resp.status

    assert await asyncio.gather(*(one() for _ in range(30))) == [200] * 30
    assert len(pool._open) <= 3
    await pool.close()


async def test_refused_connection_is_an_http_error(dead_url: str) -> None:
    pool = ConnectionPool(dead_url)
    with pytest.raises(HTTPError, match="cannot connect"):
        await pool.post("/chat/completions", BODY, JSON, stream=False, idle_timeout=5)


@contextlib.asynccontextmanager
async def _server(handler: object) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)


async def test_a_silent_upstream_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async with _server(silent) as url:
        pool = ConnectionPool(url)
        with pytest.raises(HTTPError, match="no data"):
            await pool.post("/chat/completions", BODY, JSON, stream=False, idle_timeout=0.2)


async def test_a_connection_closed_while_idle_is_replaced_transparently() -> None:
    answers = 0

    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answers
        await _read_request(reader)
        answers += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    async with _server(one_per_connection) as url:
        pool = ConnectionPool(url)
        for _ in range(3):
            resp = await pool.post("/chat/completions", BODY, JSON, stream=False, idle_timeout=2)
            assert await resp.read() == b"{}"
            await asyncio.sleep(0.1)
        assert answers == 3
        await pool.close()


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="not an http"):
        ConnectionPool("ftp://example.invalid/v1")
