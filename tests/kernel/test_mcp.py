"""MCP providers against real MCP servers: a stdio child process and a streamable HTTP server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import (
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
)
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from tests.support import free_port

from aigrid.config import ProviderConfig
from aigrid.kernel.providers.base import ProviderError
from aigrid.kernel.providers.mcp import McpConnectionError, McpProvider, McpToolError, result_value
from aigrid.kernel.tools import CallContext, Tool, ToolRegistry

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

SERVER = Path(__file__).with_name("mcp_stdio_server.py")
CTX = CallContext(pid="p1", tenant_id=1, idempotency_key="p1:1")


def stdio_config(charge_log: Path, **extra: object) -> ProviderConfig:
    return ProviderConfig.model_validate(
        {
            "name": "prov",
            "kind": "mcp",
            "command": (sys.executable, str(SERVER)),
            "env": {"CHARGE_LOG": str(charge_log)},
            "timeout_s": 20,
            **extra,
        }
    )


@pytest.fixture
async def stdio(tmp_path: Path) -> AsyncIterator[tuple[McpProvider, dict[str, Tool]]]:
    provider = McpProvider(stdio_config(tmp_path / "charges.log"))
    tools = await provider.open()
    yield provider, {t.name: t for t in tools}
    await provider.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def server_pid(tools: dict[str, Tool]) -> int:
    return int(json.loads(await tools["prov.pid"].handler({}, CTX))["result"])


async def test_tools_are_listed_across_pages_and_named_after_the_provider(
    stdio: tuple[McpProvider, dict[str, Tool]],
) -> None:
    _, tools = stdio
    assert set(tools) == {
        "prov.add",
        "prov.echo",
        "prov.fail",
        "prov.slow",
        "prov.charge",
        "prov.lookup_v2",
        "prov.pid",
    }
    add = tools["prov.add"]
    assert add.description == "Add two integers."
    assert add.parameters["required"] == ["a", "b"]
    assert add.parameters["properties"]["a"]["type"] == "integer"
    assert add.timeout_s == 20


async def test_a_call_returns_the_tool_result(stdio: tuple[McpProvider, dict[str, Tool]]) -> None:
    _, tools = stdio
    assert json.loads(await tools["prov.add"].handler({"a": 2, "b": 40}, CTX)) == {"result": 42}
    assert json.loads(await tools["prov.lookup_v2"].handler({"word": "abc"}, CTX)) == {"result": "ABC"}
    outcome = await ToolRegistry().call(tools["prov.echo"], {"text": "héllo"}, CTX)
    assert outcome.ok and json.loads(outcome.content) == {"result": "héllo"}


async def test_an_error_result_raises_with_the_tool_message(
    stdio: tuple[McpProvider, dict[str, Tool]],
) -> None:
    _, tools = stdio
    with pytest.raises(McpToolError, match="the fail tool failed on purpose"):
        await tools["prov.fail"].handler({}, CTX)
    outcome = await ToolRegistry().call(tools["prov.fail"], {}, CTX)
    assert not outcome.ok and "the fail tool failed on purpose" in outcome.content


async def test_the_idempotency_key_is_filled_in_and_hidden_from_the_model(
    stdio: tuple[McpProvider, dict[str, Tool]], tmp_path: Path
) -> None:
    _, tools = stdio
    charge = tools["prov.charge"]
    assert set(charge.parameters["properties"]) == {"amount"}
    assert charge.parameters["required"] == ["amount"]
    ctx = CallContext(pid="p9", tenant_id=1, idempotency_key="p9:7")
    # Even a key the model made up is replaced by the call's own.
    assert "charged 5" in await charge.handler({"amount": 5, "idempotency_key": "forged"}, ctx)
    assert (tmp_path / "charges.log").read_text().split() == ["5", "p9:7", "p9:7"]


async def test_concurrent_calls_share_the_session(stdio: tuple[McpProvider, dict[str, Tool]]) -> None:
    _, tools = stdio
    pid = await server_pid(tools)
    started = time.monotonic()
    results = await asyncio.gather(*(tools["prov.slow"].handler({"seconds": 0.3}, CTX) for _ in range(20)))
    assert len(results) == 20 and all("slept 0.3" in r for r in results)
    assert time.monotonic() - started < 3  # run together, not one after another
    assert await server_pid(tools) == pid  # one process served them all


async def test_a_call_cut_by_the_time_limit_leaves_the_session_usable(
    stdio: tuple[McpProvider, dict[str, Tool]],
) -> None:
    _, tools = stdio
    hasty = dataclasses.replace(tools["prov.slow"], timeout_s=0.2)
    outcome = await ToolRegistry().call(hasty, {"seconds": 5}, CTX)
    assert not outcome.ok and "did not answer" in outcome.content
    assert json.loads(await tools["prov.add"].handler({"a": 1, "b": 1}, CTX)) == {"result": 2}


async def test_close_ends_the_child_process_and_may_be_repeated(tmp_path: Path) -> None:
    provider = McpProvider(stdio_config(tmp_path / "charges.log"))
    tools = {t.name: t for t in await provider.open()}
    pid = await server_pid(tools)
    assert alive(pid)
    await provider.close()
    assert not alive(pid)
    await provider.close()
    with pytest.raises(McpConnectionError, match="closed"):
        await tools["prov.add"].handler({"a": 1, "b": 1}, CTX)


async def test_a_killed_server_is_restarted_by_the_next_call(
    stdio: tuple[McpProvider, dict[str, Tool]],
) -> None:
    _, tools = stdio
    pid = await server_pid(tools)
    os.kill(pid, signal.SIGKILL)
    assert json.loads(await tools["prov.add"].handler({"a": 3, "b": 4}, CTX)) == {"result": 7}
    new_pid = await server_pid(tools)
    assert new_pid != pid and alive(new_pid)


async def test_a_missing_command_fails_to_open_promptly(tmp_path: Path) -> None:
    provider = McpProvider(stdio_config(tmp_path / "x.log", command=("/nonexistent/mcp-server", "--stdio")))
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"could not start '/nonexistent/mcp-server --stdio'"):
        await provider.open()
    assert time.monotonic() - started < 5
    await provider.close()


async def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    silent = (sys.executable, "-c", "import sys; sys.stdin.read()")
    provider = McpProvider(stdio_config(tmp_path / "x.log", command=silent, timeout_s=1))
    with pytest.raises(ProviderError, match="did not answer within 1 s"):
        await provider.open()
    await provider.close()


async def test_results_of_other_kinds_are_described() -> None:
    image = ImageContent(data="aGVsbG8=", mime_type="image/png")
    doc = EmbeddedResource(resource=TextResourceContents(uri="file:///a.txt", text="the doc"))
    result = CallToolResult(content=[TextContent(text="see:"), image, doc])
    assert result_value(result) == "see:\n[image image/png, 5 bytes]\nthe doc"
    assert result_value(CallToolResult(content=[], structured_content={"n": 1})) == '{"n": 1}'
    with pytest.raises(McpToolError, match="without a message"):
        result_value(CallToolResult(content=[], is_error=True))


# --- streamable HTTP ---


def http_server() -> MCPServer:
    server = MCPServer("test-http")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def whoami(ctx: Context) -> str:
        """The Authorization header the request came with."""
        return (ctx.headers or {}).get("authorization", "none")

    return server


class HttpMcp:
    """A streamable HTTP MCP server (or another ASGI app) run by uvicorn in a thread."""

    def __init__(self, port: int, app: ASGIApp | None = None) -> None:
        app = app or http_server().streamable_http_app()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the MCP HTTP server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    port = free_port()
    server = HttpMcp(port)
    yield port
    server.stop()


def http_config(port: int, timeout_s: float = 20) -> ProviderConfig:
    return ProviderConfig(
        name="web",
        kind="mcp",
        url=f"http://127.0.0.1:{port}/mcp",
        headers={"Authorization": "Bearer sekrit"},
        timeout_s=timeout_s,
    )


async def test_http_tools_are_called_with_the_configured_headers(http_port: int) -> None:
    provider = McpProvider(http_config(http_port))
    tools = {t.name: t for t in await provider.open()}
    try:
        assert set(tools) == {"web.add", "web.whoami"}
        assert json.loads(await tools["web.whoami"].handler({}, CTX)) == {"result": "Bearer sekrit"}
        results = await asyncio.gather(*(tools["web.add"].handler({"a": i, "b": 1}, CTX) for i in range(20)))
        assert [json.loads(r)["result"] for r in results] == [i + 1 for i in range(20)]
    finally:
        await provider.close()
    await provider.close()


async def test_a_refused_url_fails_to_open_promptly() -> None:
    provider = McpProvider(http_config(free_port()))
    started = time.monotonic()
    refused = r"could not connect to http://127\.0\.0\.1:\d+/mcp: the connection was refused \(is the server"
    with pytest.raises(ProviderError, match=refused):
        await provider.open()
    assert time.monotonic() - started < 5
    await provider.close()


async def test_an_http_server_that_went_away_fails_calls_then_reconnects_when_back() -> None:
    port = free_port()
    server = HttpMcp(port)
    provider = McpProvider(http_config(port, timeout_s=5))
    try:
        add = {t.name: t for t in await provider.open()}["web.add"]
        assert json.loads(await add.handler({"a": 1, "b": 2}, CTX)) == {"result": 3}
        server.stop()
        with pytest.raises(McpConnectionError, match="reconnecting failed"):
            await add.handler({"a": 1, "b": 2}, CTX)
        server = HttpMcp(port)
        assert json.loads(await add.handler({"a": 2, "b": 2}, CTX)) == {"result": 4}
    finally:
        await provider.close()
        server.stop()


# --- HTTP servers that refuse: the admin is told the status and what to do ---

TOKEN = "t0ken"


def gated_app(port: int) -> ASGIApp:
    """The MCP server at /mcp for ``Bearer t0ken`` only (401 otherwise), and paths that are not MCP."""
    mcp_app = http_server().streamable_http_app()
    metadata = f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource"
    rpc_error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": "down for maintenance"}}
    answers: dict[str, Response] = {
        "/broken/mcp": PlainTextResponse("boom", status_code=500),
        "/busy/mcp": JSONResponse(rpc_error, status_code=503),
        "/page": HTMLResponse("<html><body>Welcome</body></html>"),
    }

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        headers = dict(scope.get("headers", []))
        if scope["type"] == "http" and path in answers:
            await answers[path](scope, receive, send)
        elif (
            scope["type"] == "http"
            and path == "/mcp"
            and headers.get(b"authorization") != f"Bearer {TOKEN}".encode()
        ):
            challenge = f'Bearer resource_metadata="{metadata}"'
            refusal = JSONResponse({"error": "invalid_token"}, 401, headers={"WWW-Authenticate": challenge})
            await refusal(scope, receive, send)
        else:
            await mcp_app(scope, receive, send)  # its lifespan, the MCP endpoint, and 404 elsewhere

    return app


@pytest.fixture(scope="module")
def gated_port() -> Iterator[int]:
    port = free_port()
    server = HttpMcp(port, gated_app(port))
    yield port
    server.stop()


def gated_config(port: int, path: str = "/mcp", headers: dict[str, str] | None = None) -> ProviderConfig:
    url = f"http://127.0.0.1:{port}{path}"
    return ProviderConfig(name="gated", kind="mcp", url=url, headers=headers or {}, timeout_s=10)


async def open_error(config: ProviderConfig) -> str:
    """The message a provider that fails to open gives the admin."""
    provider = McpProvider(config)
    try:
        with pytest.raises(ProviderError) as failed:
            await provider.open()
    finally:
        await provider.close()
    return str(failed.value)


async def test_a_401_says_authorization_is_wanted_and_a_token_header_then_works(gated_port: int) -> None:
    message = await open_error(gated_config(gated_port))
    url = f"http://127.0.0.1:{gated_port}/mcp"
    assert message.startswith(f"mcp provider 'gated': could not connect to {url}: ")
    assert "the server answered 401 Unauthorized: it wants authorization" in message
    metadata = f"http://127.0.0.1:{gated_port}/.well-known/oauth-protected-resource"
    assert f"(WWW-Authenticate: Bearer, resource metadata at {metadata})" in message
    assert "configure OAuth for it (--oauth-client-id ID --oauth-client-secret SECRET" in message
    assert "--header 'Authorization: Bearer TOKEN'" in message
    assert "Server returned an error response" not in message

    provider = McpProvider(gated_config(gated_port, headers={"Authorization": f"Bearer {TOKEN}"}))
    try:
        tools = {t.name: t for t in await provider.open()}
        assert json.loads(await tools["gated.whoami"].handler({}, CTX)) == {"result": f"Bearer {TOKEN}"}
    finally:
        await provider.close()


async def test_a_refused_token_is_named_as_such(gated_port: int) -> None:
    message = await open_error(gated_config(gated_port, headers={"Authorization": "Bearer wrong"}))
    assert "401 Unauthorized" in message
    assert "the Authorization header it was registered with was refused: check the token" in message


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (
            "/nope/mcp",
            "the server answered 404 Not Found: no MCP endpoint at that URL (check the path, e.g. /mcp)",
        ),
        ("/broken/mcp", "the server answered 500 Internal Server Error"),
        ("/busy/mcp", 'the server answered 503 Service Unavailable (it said: "down for maintenance")'),
        ("/page", "the server answered 200 OK with text/html, not MCP (check the URL, e.g. http://host/mcp)"),
    ],
)
async def test_other_http_answers_are_told_with_their_status(gated_port: int, path: str, reason: str) -> None:
    message = await open_error(gated_config(gated_port, path))
    assert (
        message == f"mcp provider 'gated': could not connect to http://127.0.0.1:{gated_port}{path}: {reason}"
    )
