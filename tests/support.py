"""Helpers for tests: ports, a recording test-double upstream, and a live aigrid server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

ADMIN_KEY = "sk-aigrid-admin-test"
# SmolLM2's end tokens (<|endoftext|>, <|im_end|>) banned: the answer runs to its max_tokens, so a
# request meant to be long cannot end after a few words.
NO_END = {"logit_bias": {"0": -100, "2": -100}}
# Where the browser tests leave screenshots of the console for a person to look at.
SCREENSHOTS = Path(
    os.environ.get("AIGRID_SCREENSHOTS", Path(__file__).resolve().parents[1] / "build" / "screenshots")
)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Block until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def mock_config(url: str, *, input_price: str = "0.8", output_price: str = "2.0", extra: str = "") -> str:
    """A config serving model `mock` from one OpenAI-compatible deployment at ``url``."""
    return f"""{extra}
[[models]]
name = "mock"
[[models.deployments]]
backend = "openai"
base_url = "{url}"
upstream_model = "mock"
input_price_per_mtok = {input_price}
output_price_per_mtok = {output_price}
"""


class RecordingUpstream:
    """A test double OpenAI upstream: records each request body, answers with a fixed status.

    Whole answers come from ``script`` (assistant messages, tool calls included) while it lasts,
    then are "hi".
    """

    def __init__(self, status: int = 200, stream_chunks: int = 1, chunk_delay_s: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[dict[str, Any]] = []
        self.delay_s = 0.0  # how long each whole answer takes
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                outer.requests.append(body)
                if status != 200:
                    payload = json.dumps({"error": {"message": "upstream exploded", "type": "server_error"}})
                    self._send(status, "application/json", payload.encode())
                    return
                usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
                if body.get("stream"):
                    self._stream(body["model"], usage)
                    return
                message = outer.script.pop(0) if outer.script else {"role": "assistant", "content": "hi"}
                time.sleep(outer.delay_s)
                reply = {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", ""),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                            "message": message,
                        }
                    ],
                    "usage": usage,
                }
                self._send(200, "application/json", json.dumps(reply).encode())

            def _stream(self, model: str, usage: dict[str, int]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model}
                events: list[dict[str, Any]] = [
                    {**base, "choices": [{"index": 0, "delta": {"content": "hi "}, "finish_reason": None}]}
                    for _ in range(stream_chunks)
                ]
                events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                events.append({**base, "choices": [], "usage": {**usage, "completion_tokens": stream_chunks}})
                try:
                    for event in events:
                        self._chunk(f"data: {json.dumps(event)}\n\n".encode())
                        time.sleep(chunk_delay_s)
                    self._chunk(b"data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    return

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _send(self, code: int, ctype: str, data: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Shut the server down."""
        self._server.shutdown()
        self._server.server_close()


def stop_gracefully(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a child that still runs, and SIGKILL it if it has not stopped 20 seconds later."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LiveServer:
    """An ``aigrid serve`` process on a free port, driven through its HTTP API."""

    def __init__(
        self,
        data_dir: Path,
        config: str | None = None,
        env: dict[str, str] | None = None,
        admin_key: bool = True,
        serve_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.serve_args = serve_args
        self.admin_key_in_env = admin_key
        self.config_text = config
        self.extra_env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    def start(self, timeout: float = 90.0) -> LiveServer:
        """Start the process and wait until /healthz answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "aigrid",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.serve_args,
        ]
        if self.config_text is not None:
            cfg = self.data_dir / "config.toml"
            cfg.write_text(self.config_text)
            args += ["--config", str(cfg)]
        env = {**os.environ, "AIGRID_ADMIN_KEY": ADMIN_KEY, **self.extra_env}
        if not self.admin_key_in_env:
            del env["AIGRID_ADMIN_KEY"]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aigrid exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"aigrid did not start:\n{self.log()}")

    def log(self) -> str:
        """What the server printed."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop gracefully."""
        if self.proc is not None:
            stop_gracefully(self.proc)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def openai(self, key: str = ADMIN_KEY) -> OpenAI:
        """The official client with strict response validation."""
        return OpenAI(
            base_url=self.url + "/v1",
            api_key=key,
            max_retries=0,
            timeout=60,
            _strict_response_validation=True,
        )

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the admin API with the admin key."""
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def new_tenant_key(self, tenant: str, users: tuple[str, ...] = ()) -> str:
        """Create a tenant acting for ``users`` (whose wallets it may pay from); a fresh key of it."""
        assert self.admin("POST", "/admin/tenants", json={"name": tenant}).status_code == 201
        for user in users:
            added = self.admin("PUT", f"/admin/tenants/{tenant}/users/{user}")
            assert added.status_code == 201, added.text
        created = self.admin("POST", "/admin/keys", json={"tenant": tenant})
        assert created.status_code == 201, created.text
        return str(created.json()["key"])


def ledger_rows(data_dir: Path) -> dict[str, tuple[str, int]]:
    """Every ledger row of a server's SQLite database: request id to (status, completion tokens)."""
    with sqlite3.connect(data_dir / "aigrid.db") as db:
        rows = db.execute("SELECT id, status, completion_tokens FROM ledger").fetchall()
    return {rid: (status, tokens) for rid, status, tokens in rows}


def aigrid(
    server: LiveServer,
    *args: str,
    key_from_data_dir: bool = False,
    answer: str = "",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the aigrid command the way a user's shell would; ``answer`` is what the user types."""
    env = {**os.environ, **(env or {}), "AIGRID_URL": server.url, "COLUMNS": "200"}
    env.pop("AIGRID_ADMIN_KEY", None)
    if key_from_data_dir:
        env["AIGRID_DATA_DIR"] = str(server.data_dir)
    else:
        env["AIGRID_ADMIN_KEY"] = ADMIN_KEY
    return subprocess.run(
        [sys.executable, "-m", "aigrid", *args],
        env=env,
        input=answer,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def until(check: Callable[[], bool], what: str, timeout_s: float = 60.0, every_s: float = 0.1) -> None:
    """Wait until ``check()`` holds (a state servers change in their own time); fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(every_s)


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Wait until ``check()`` holds: for state another process changes, with no event to wait on."""
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert check(), what


# A raw MCP client over streamable HTTP, for what the SDK's client does not show: the SSE events.
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
SseEvent = dict[str, str]


async def sse_events(
    response: httpx.Response, until: Callable[[SseEvent], bool] | None = None
) -> list[SseEvent]:
    """The events of an SSE response, each as its fields, to the end or to the first that ``until`` likes."""
    events: list[SseEvent] = []
    fields: SseEvent = {}
    async with asyncio.timeout(30):
        async for line in response.aiter_lines():
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            elif fields:
                events.append(fields)
                fields = {}
                if until is not None and until(events[-1]):
                    break
    return events


async def mcp_post(http: httpx.AsyncClient, url: str, headers: dict[str, str], body: Any) -> list[SseEvent]:
    """POST one JSON-RPC request and read the SSE stream that answers it."""
    async with http.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "text/event-stream"
        )
        return await sse_events(response)


async def mcp_session(http: httpx.AsyncClient, url: str) -> tuple[dict[str, str], list[SseEvent]]:
    """Open an MCP session at protocol 2025-11-25: the headers its requests carry, and the
    initialize request's SSE events."""
    hello = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    }
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}
    async with http.stream("POST", url, json=request, headers=MCP_HEADERS) as response:
        headers = {**MCP_HEADERS, "Mcp-Session-Id": response.headers["mcp-session-id"]}
        events = await sse_events(response)
    initialized = await http.post(
        url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
    )
    assert initialized.status_code == 202, initialized.text
    return headers, events


TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


async def check_streams_start_primed(url: str, retry_ms: int) -> None:
    """Each SSE stream of the MCP server at ``url`` starts with a priming event: an id, empty data
    and the retry time; the answer follows."""
    async with httpx.AsyncClient(timeout=30) as http:
        headers, opened = await mcp_session(http, url)
        listed = await mcp_post(http, url, headers, TOOLS_LIST)
    for events in (opened, listed):
        assert set(events[0]) == {"id", "data", "retry"}, f"no priming event: {events}"
        assert events[0]["id"] and events[0]["data"] == "" and events[0]["retry"] == str(retry_ms)
        answer = json.loads(events[-1]["data"])
        assert "result" in answer and events[-1]["id"] not in ("", events[0]["id"])
    assert "tools" in json.loads(listed[-1]["data"])["result"]


async def check_a_lost_stream_resumes_in_its_own_session_only(url: str) -> None:
    """A GET with the ``Last-Event-ID`` of a stream's priming event replays its answer, under the
    same id, to the session that asked; to another session, nothing."""
    async with httpx.AsyncClient(timeout=30) as http:
        mine, _ = await mcp_session(http, url)
        listed = await mcp_post(http, url, mine, TOOLS_LIST)
        assert "id" in listed[0], f"no priming event to resume from: {listed}"
        theirs, _ = await mcp_session(http, url)
        resume = {"Last-Event-ID": listed[0]["id"]}
        # A resumed stream stays open for what comes next: read up to the first message.
        async with http.stream("GET", url, headers={**mine, **resume}) as resumed:
            assert resumed.status_code == 200
            replayed = await sse_events(resumed, until=lambda event: bool(event.get("data")))
        async with http.stream("GET", url, headers={**theirs, **resume}) as other:
            assert other.status_code == 200
            leaked = await sse_events(other, until=lambda event: bool(event.get("data")))
    assert replayed == listed[1:]
    assert leaked == []
