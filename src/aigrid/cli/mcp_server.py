"""`aigrid mcp`: a tenant's agents, and the grid's chat, as tools (and resources, prompts) for MCP clients."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, Annotated, Any, get_args

import httpx
import typer
from rich.console import Console

from aigrid import __version__
from aigrid.cli import mcp_prompts, mcp_resources
from aigrid.cli.client import CLIError, admin_key, server_url
from aigrid.cli.common import fail
from aigrid.cli.mcp_follow import Follower, Level
from aigrid.cli.mcp_grid import Grid, GridError

if TYPE_CHECKING:
    # The SDK takes most of a second to import: only `aigrid mcp` pays for it, at run time.
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel import Server
    from mcp_types import (
        CallToolRequestParams,
        CallToolResult,
        CompleteRequestParams,
        CompleteResult,
        EmptyResult,
        GetPromptRequestParams,
        GetPromptResult,
        ListPromptsResult,
        ListResourcesResult,
        ListResourceTemplatesResult,
        ListToolsResult,
        PaginatedRequestParams,
        ReadResourceRequestParams,
        ReadResourceResult,
        SetLevelRequestParams,
        Tool,
    )

AGENT_PREFIX = "agent_"
LEVELS: tuple[Level, ...] = get_args(Level)  # least severe first
# Until a client sets a level, steps are logged from "info" up: what happened, not each model request.
DEFAULT_LEVEL: Level = "info"
# Sessions whose level is kept: the most recently set; an older one falls back to the default.
LEVEL_SESSIONS = 1024
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


def _session(ctx: ServerRequestContext[Any]) -> str | None:
    """The MCP session a request belongs to: its Mcp-Session-Id over HTTP; stdio has one (None)."""
    from mcp.server.streamable_http import MCP_SESSION_ID_HEADER

    headers = getattr(ctx.request, "headers", None)
    return headers.get(MCP_SESSION_ID_HEADER) if headers is not None else None


class LogLevels:
    """The level each session asked for with logging/setLevel (protocol versions up to 2025-11-25)."""

    def __init__(self, sessions: int = LEVEL_SESSIONS) -> None:
        self._levels: OrderedDict[str | None, Level] = OrderedDict()
        self._sessions = sessions

    def set(self, session: str | None, level: Level) -> None:
        """Keep ``session``'s level, forgetting the least recently set session's beyond the bound."""
        self._levels[session] = level
        self._levels.move_to_end(session)
        while len(self._levels) > self._sessions:
            self._levels.popitem(last=False)

    def allows(self, ctx: ServerRequestContext[Any], level: Level) -> bool:
        """Whether a log message at ``level`` may go to the client of ``ctx``'s request."""
        from mcp_types import LOG_LEVEL_META_KEY
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            # From 2026-07-28 each request opts in through its _meta, and nothing is sent without it.
            asked = (ctx.meta or {}).get(LOG_LEVEL_META_KEY)
            least = asked if asked in LEVELS else None
        else:
            least = self._levels.get(_session(ctx), DEFAULT_LEVEL)
        return least is not None and LEVELS.index(level) >= LEVELS.index(least)


class RequestReporter:
    """A tool call's progress and log messages, sent on that call's own stream."""

    def __init__(self, ctx: ServerRequestContext[Any], levels: LogLevels) -> None:
        self._ctx, self._levels = ctx, levels

    async def progress(self, done: float, total: float | None, message: str) -> None:
        """A progress notification, when the call asked for progress with a token."""
        await self._ctx.session.report_progress(done, total, message)

    async def log(self, level: Level, logger: str, data: dict[str, Any]) -> None:
        """A notifications/message, when the client's level lets it through."""
        from mcp_types import LoggingMessageNotification, LoggingMessageNotificationParams

        if not self._levels.allows(self._ctx, level):
            return
        params = LoggingMessageNotificationParams(level=level, logger=logger, data=data)
        await self._ctx.session.send_notification(
            LoggingMessageNotification(params=params), related_request_id=self._ctx.request_id
        )


def build_server(grid: Grid) -> Server[Any]:
    """The MCP server: tools, resources and prompts read from aigrid at each request."""
    from mcp.server.lowlevel import Server
    from mcp.shared.exceptions import MCPError
    from mcp_types import (
        INTERNAL_ERROR,
        CallToolResult,
        CompleteResult,
        EmptyResult,
        ListPromptsResult,
        ListResourcesResult,
        ListResourceTemplatesResult,
        ListToolsResult,
        SetLevelRequestParams,
        TextContent,
    )

    levels = LogLevels()

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
                follower = Follower(grid, name.removeprefix(AGENT_PREFIX), RequestReporter(ctx, levels))
                text = await follower.run(_text(arguments, "input"))
            else:
                raise GridError(f"Unknown tool: {name}")
        except GridError as exc:
            return CallToolResult(content=[TextContent(type="text", text=exc.message)], is_error=True)
        return CallToolResult(content=[TextContent(type="text", text=text)])

    async def set_level(ctx: ServerRequestContext[Any], params: SetLevelRequestParams) -> EmptyResult:
        levels.set(_session(ctx), params.level)
        return EmptyResult()

    async def list_resources(
        ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        try:
            return ListResourcesResult(resources=await mcp_resources.list_resources(grid))
        except GridError as exc:
            raise mcp_resources.grid_failed(exc) from exc

    async def list_templates(
        ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        return ListResourceTemplatesResult(resource_templates=mcp_resources.templates())

    async def read_resource(
        ctx: ServerRequestContext[Any], params: ReadResourceRequestParams
    ) -> ReadResourceResult:
        return await mcp_resources.read_resource(grid, str(params.uri))

    async def list_prompts(
        ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListPromptsResult:
        return ListPromptsResult(prompts=mcp_prompts.prompts())

    async def get_prompt(ctx: ServerRequestContext[Any], params: GetPromptRequestParams) -> GetPromptResult:
        return await mcp_prompts.get_prompt(grid, params.name, params.arguments)

    async def complete(ctx: ServerRequestContext[Any], params: CompleteRequestParams) -> CompleteResult:
        ref = params.ref
        named = f"prompt:{ref.name}" if ref.type == "ref/prompt" else f"resource:{ref.uri}"
        argument = params.argument
        return CompleteResult(
            completion=await mcp_prompts.complete(grid, named, argument.name, argument.value)
        )

    server: Server[Any] = Server(
        "aigrid",
        version=__version__,
        instructions=(
            "Tools that run this tenant's aigrid agents, and `chat` with the grid's models; resources "
            "with the agents' specs, processes' journals and the inbox; prompts to run, write and "
            "explain agents."
        ),
        get_tool_input_schema=_input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
    )
    # Registered by hand: the constructor's on_set_logging_level warns that 2026-07-28 drops it, but
    # clients of 2025-11-25 and before still set their level with it.
    server.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    return server


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
    """Serve a tenant's agents, chat, specs, journals and inbox over MCP: stdio (or HTTP with --http)."""
    try:
        if not key and not tenant:
            raise CLIError("name a tenant with --tenant (admin key), or give a tenant's key with --key", 2)
        asyncio.run(_main(key or admin_key(), tenant, timeout, http, host))
    except CLIError as exc:
        fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        pass
