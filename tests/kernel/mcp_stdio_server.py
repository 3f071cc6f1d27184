"""A small MCP server over stdio for the provider tests; its tools are listed two per page."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ListToolsResult, PaginatedRequestParams

PAGE = 2


class PagedServer(MCPServer):
    """An MCPServer that lists its tools a page at a time, so the client must follow cursors."""

    async def _handle_list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        tools = await self.list_tools()
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + PAGE
        return ListToolsResult(tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None)


server = PagedServer("test-stdio")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return text


@server.tool()
def fail() -> str:
    """Always fails, with a message meant for the caller."""
    raise ToolError("the fail tool failed on purpose")


@server.tool()
async def slow(seconds: float) -> str:
    """Wait, then answer."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def charge(amount: int, idempotency_key: str, ctx: Context) -> str:
    """Charge an amount once per key; records the key and the request's _meta key."""
    meta = ctx.request_context.meta or {}
    with open(os.environ["CHARGE_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{amount} {idempotency_key} {meta.get('aigrid/idempotency_key')}\n")
    return f"charged {amount}"


@server.tool(name="lookup.v2")
def lookup(word: str) -> str:
    """A tool whose name the grid must sanitise, but call by its own name."""
    return word.upper()


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


if __name__ == "__main__":
    server.run()
