"""The server's outer layer: a route that crashes is answered with a 500 and keeps its connection."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from tests.support import free_port

from aigrid.api.hot_path import HotPath

pytestmark = pytest.mark.timeout(60)


def crashing_app() -> FastAPI:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/fine")
    async def fine() -> dict[str, bool]:
        return {"ok": True}

    async def on_crash(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": {"code": "internal_error"}}, status_code=500)

    app.add_exception_handler(Exception, on_crash)
    return app


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    chosen = free_port()
    config = uvicorn.Config(HotPath(crashing_app()), host="127.0.0.1", port=chosen, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield chosen
    server.should_exit = True
    thread.join(10)


def exchange(conn: socket.socket, path: str) -> bytes:
    """Send one keep-alive GET and read its whole answer (headers and a Content-Length body)."""
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_crash_is_a_500_and_the_next_request_on_the_connection_is_answered(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        crashed = exchange(conn, "/boom")
        assert crashed.startswith(b"HTTP/1.1 500") and b"internal_error" in crashed
        again = exchange(conn, "/fine")
        assert again.startswith(b"HTTP/1.1 200") and again.endswith(b'{"ok":true}'), again
