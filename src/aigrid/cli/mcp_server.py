"""`aigrid mcp`: a tenant's agents, and the grid's chat, as tools for other MCP clients."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console

from aigrid import __version__
from aigrid.cli.client import CLIError, admin_key, error_message, server_url
from aigrid.cli.common import fail

if TYPE_CHECKING:
    # The SDK takes most of a second to import: only `aigrid mcp` pays for it, at run time.
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel import Server
    from mcp_types import CallToolRequestParams, CallToolResult, ListToolsResult, PaginatedRequestParams, Tool

AGENT_PREFIX = "agent_"
POLL_S = 0.2
# The first polls come sooner: a one-step agent is often done within a few tens of milliseconds.
FIRST_POLL_S = 0.025
CONNECT_TIMEOUT_S = 10.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_AGENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "What the agent starts from."}},
    "required": ["input"],
}
_CHAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "description": "The user's message."},
        "model": {"type": "string", "description": "A model the grid serves.", "default": "local"},
    },
    "required": ["prompt"],
}


class GridError(Exception):
    """A call to aigrid that failed; the message is what the MCP client is told."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Grid:
    """aigrid's HTTP API as one tenant sees it: its agents, their processes, and chat."""

    def __init__(self, http: httpx.AsyncClient, tenant: str | None, timeout_s: float) -> None:
        self._http = http
        # The admin key names the tenant on every call; a tenant key's own tenant needs no naming.
        self._scope = {"tenant": tenant} if tenant else {}
        self.timeout_s = timeout_s

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        where = str(self._http.base_url).rstrip("/")
        try:
            response = await self._http.request(method, path, params=params, json=body)
        except httpx.ConnectError:
            raise GridError(f"cannot reach aigrid at {where} (is 'aigrid serve' running?)") from None
        except httpx.TimeoutException:
            raise GridError(f"aigrid at {where} did not answer {method} {path} in time") from None
        except httpx.HTTPError as exc:
            raise GridError(f"request to aigrid at {where} failed: {exc}") from exc
        if response.is_error:
            raise GridError(error_message(response))
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise GridError(f"aigrid at {where} answered {method} {path} with no JSON object")
        return data

    async def agents(self) -> list[dict[str, Any]]:
        """The tenant's agents, the newest version of each."""
        listing = await self._call("GET", "/v1/agents", params=self._scope)
        return [a for a in listing.get("data", []) if isinstance(a, dict) and isinstance(a.get("name"), str)]

    async def models(self) -> list[str]:
        """The names of the models the grid serves."""
        listing = await self._call("GET", "/v1/models")
        return [str(m["id"]) for m in listing.get("data", []) if isinstance(m, dict) and "id" in m]

    async def chat(self, prompt: str, model: str) -> str:
        """The assistant's answer to one user message."""
        body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
        answer = await self._call("POST", "/v1/chat/completions", body=body)
        choices = answer.get("choices") or [{}]
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""

    async def run(self, agent: str, text: str) -> str:
        """Run an agent on ``text`` and wait for its result; a GridError if it ends or waits without one."""
        process = await self._call(
            "POST", "/v1/processes", body={"agent": agent, "input": text, **self._scope}
        )
        pid = str(process["pid"])
        deadline, delay = time.monotonic() + self.timeout_s, FIRST_POLL_S
        while True:
            state, reason = process.get("state"), process.get("reason") or "no reason given"
            if state == "done":
                return str(process.get("result") or "")
            if state in ("failed", "killed"):
                raise GridError(f"agent '{agent}' {state} (process {pid}): {reason}")
            # A process that waits for a person or a budget could wait for days: say how to move it on.
            if state == "waiting_approval":
                raise GridError(await self._approval_note(agent, pid, reason))
            if state == "suspended":
                raise GridError(
                    f"agent '{agent}' is suspended (process {pid}): {reason}. It goes on when its budget "
                    f"allows, or after `aigrid resume {pid}`; follow it with `aigrid logs {pid}`."
                )
            if time.monotonic() >= deadline:
                raise GridError(
                    f"agent '{agent}' did not finish within {self.timeout_s:g} s; its process {pid} is "
                    f"still {state}: follow it with `aigrid logs {pid}`."
                )
            await asyncio.sleep(delay)
            delay = min(POLL_S, delay * 2)
            process = await self._call("GET", f"/v1/processes/{pid}")

    async def _approval_note(self, agent: str, pid: str, reason: str) -> str:
        try:
            waiting = (await self._call("GET", "/v1/approvals", params=self._scope)).get("data", [])
        except GridError:
            waiting = []
        ids = [str(a["id"]) for a in waiting if isinstance(a, dict) and a.get("pid") == pid]
        how = f"`aigrid approve {ids[0]}` (or `aigrid deny {ids[0]}`)" if ids else "`aigrid approvals`"
        return (
            f"agent '{agent}' waits for a person's approval (process {pid}, {reason}): "
            f"decide with {how}, then follow it with `aigrid logs {pid}`."
        )


def _agent_tool(agent: dict[str, Any]) -> Tool:
    from mcp_types import Tool

    name = str(agent["name"])
    spec = agent.get("spec")
    description = spec.get("description") if isinstance(spec, dict) else None
    return Tool(
        name=AGENT_PREFIX + name,
        description=description or f"Run the aigrid agent '{name}' on the input and return its result.",
        input_schema=_AGENT_SCHEMA,
    )


def _chat_tool(models: list[str]) -> Tool:
    from mcp_types import Tool

    served = f" Models: {', '.join(models)}." if models else ""
    return Tool(
        name="chat",
        description=f"Ask a model served by the aigrid gateway and return its answer.{served}",
        input_schema=_CHAT_SCHEMA,
    )


def _input_schema(name: str) -> dict[str, Any] | None:
    """A tool's schema from its name alone, so a streamable-HTTP call need not list every tool first."""
    if name == "chat":
        return _CHAT_SCHEMA
    return _AGENT_SCHEMA if name.startswith(AGENT_PREFIX) else None


def _text(arguments: dict[str, Any], name: str, default: str | None = None) -> str:
    value = arguments.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise GridError(f"'{name}' must be a non-empty string")
    return value


def build_server(grid: Grid) -> Server[Any]:
    """The MCP server: its tools are read from aigrid at each listing, and call aigrid when called."""
    from mcp.server.lowlevel import Server
    from mcp.shared.exceptions import MCPError
    from mcp_types import INTERNAL_ERROR, CallToolResult, ListToolsResult, TextContent

    async def list_tools(
        ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        try:
            agents, models = await asyncio.gather(grid.agents(), grid.models())
        except GridError as exc:
            raise MCPError(INTERNAL_ERROR, exc.message) from exc
        return ListToolsResult(tools=[*map(_agent_tool, agents), _chat_tool(models)])

    async def call_tool(ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
        arguments, name = params.arguments or {}, params.name
        try:
            if name == "chat":
                text = await grid.chat(_text(arguments, "prompt"), _text(arguments, "model", "local"))
            elif name.startswith(AGENT_PREFIX):
                text = await grid.run(name.removeprefix(AGENT_PREFIX), _text(arguments, "input"))
            else:
                raise GridError(f"Unknown tool: {name}")
        except GridError as exc:
            return CallToolResult(content=[TextContent(type="text", text=exc.message)], is_error=True)
        return CallToolResult(content=[TextContent(type="text", text=text)])

    return Server(
        "aigrid",
        version=__version__,
        instructions="Tools that run this tenant's aigrid agents, and `chat` with the grid's models.",
        get_tool_input_schema=_input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def _serve(grid: Grid, port: int | None, host: str) -> None:
    # Fail at start, not at the first tool call, when aigrid is down or the key or tenant is wrong.
    try:
        await grid.agents()
    except GridError as exc:
        raise CLIError(exc.message) from exc
    server = build_server(grid)
    if port is None:
        from mcp.server.stdio import stdio_server

        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
        return
    import uvicorn

    from aigrid.cli.mcp_events import RETRY_MS, BoundedEventStore

    err = Console(stderr=True)
    if host not in _LOOPBACK:
        err.print(f"warning: anyone who reaches {host}:{port} can run these agents; it asks for no key")
    err.print(f"aigrid mcp: serving MCP at http://{host}:{port}/mcp", highlight=False)
    # Streams start with a priming event and a retry time, so a client that loses one resumes it.
    events = BoundedEventStore()
    app = server.streamable_http_app(host=host, event_store=events, retry_interval=RETRY_MS)
    config = uvicorn.Config(events.guard(app), host=host, port=port, log_level="warning")
    await uvicorn.Server(config).serve()


async def _main(key: str, tenant: str | None, timeout_s: float, port: int | None, host: str) -> None:
    url = server_url()
    try:
        http = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
        )
    except httpx.InvalidURL as exc:
        raise CLIError(f"not a usable server URL {url!r}: {exc}", exit_code=2) from exc
    async with http:
        await _serve(Grid(http, tenant, timeout_s), port, host)


def mcp(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="The tenant whose agents to serve (with the admin key).")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", envvar="AIGRID_API_KEY", help="A tenant's API key, instead of the admin key."),
    ] = None,
    http: Annotated[
        int | None,
        typer.Option("--http", metavar="PORT", min=1, max=65535, help="Serve streamable HTTP, not stdio."),
    ] = None,
    host: Annotated[str, typer.Option(help="The address --http listens on.")] = "127.0.0.1",
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds an agent may run before its tool call gives up.")
    ] = 300.0,
) -> None:
    """Serve a tenant's agents, and the grid's chat, as MCP tools over stdio (or HTTP with --http)."""
    try:
        if not key and not tenant:
            raise CLIError("name a tenant with --tenant (admin key), or give a tenant's key with --key", 2)
        asyncio.run(_main(key or admin_key(), tenant, timeout, http, host))
    except CLIError as exc:
        fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        pass
