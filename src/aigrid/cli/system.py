"""Commands for the kernel's system calls: tools and providers, memory, the inbox, audit, top."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from aigrid.cli import render
from aigrid.cli.client import AdminClient, CLIError, connect
from aigrid.cli.common import JsonFlag, Tenant, TenantFilter, call, console, emit_json, fail

tool_app = typer.Typer(
    no_args_is_help=True, help="Add, list and remove tools (MCP servers, OpenAPI services)."
)
memory_app = typer.Typer(no_args_is_help=True, help="Search, add and forget agents' memories.")

# What `top` shows first: processes that are doing something, then those that wait.
_LIVE = ("running", "waiting_tool", "ready", "waiting_approval", "sleeping", "suspended")


def _pairs(values: list[str], separator: str, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, found, rest = value.partition(separator)
        if not found or not name.strip():
            fail(f"{what} '{value}' is not NAME{separator}VALUE", 2)
        pairs[name.strip()] = rest.strip()
    return pairs


@tool_app.command("add")
def tool_add(
    name: Annotated[str, typer.Argument(help="The provider's name; its tools are called NAME.<tool>.")],
    command: Annotated[str | None, typer.Option(help="An MCP server to start, talking over stdio.")] = None,
    url: Annotated[str | None, typer.Option(help="An MCP server's streamable HTTP endpoint.")] = None,
    openapi: Annotated[str | None, typer.Option(help="An OpenAPI document: a file or a URL.")] = None,
    base_url: Annotated[str | None, typer.Option(help="Where the OpenAPI service answers.")] = None,
    header: Annotated[list[str], typer.Option(help="'Name: value' sent with every request.")] = [],  # noqa: B006
    env: Annotated[list[str], typer.Option(help="'NAME=value' for the MCP server's environment.")] = [],  # noqa: B006
    tenant: TenantFilter = None,
    timeout: Annotated[float, typer.Option(min=0.1, max=3600, help="Seconds a call may take.")] = 30.0,
    oauth: Annotated[
        bool, typer.Option(help="OAuth (client_credentials); without a client id, one is registered.")
    ] = False,
    oauth_client_id: Annotated[str | None, typer.Option(help="OAuth client id (implies --oauth).")] = None,
    oauth_client_secret: Annotated[
        str | None,
        typer.Option(
            help="OAuth client secret (or the environment's AIGRID_OAUTH_CLIENT_SECRET).",
            envvar="AIGRID_OAUTH_CLIENT_SECRET",
        ),
    ] = None,
    oauth_scope: Annotated[str | None, typer.Option(help="OAuth scopes to ask for, space-separated.")] = None,
    oauth_issuer: Annotated[
        str | None, typer.Option(help="The authorization server's issuer URL (else the first one seen).")
    ] = None,
    oauth_login: Annotated[
        bool, typer.Option(help="OAuth by an admin's login (authorization code): then 'aigrid tool login'.")
    ] = False,
    oauth_redirect_uri: Annotated[
        str | None, typer.Option(help="Where the login sends the browser back (--oauth-login).")
    ] = None,
    oauth_client_metadata_url: Annotated[
        str | None,
        typer.Option(help="An https URL-based client id (a Client ID Metadata Document; --oauth-login)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Open an MCP server or an OpenAPI service; every tool it has can be granted to agents."""
    config = provider_config(name, command, url, openapi, base_url, header, env, timeout)
    if tenant:
        config["tenant"] = tenant
    section = {
        "client_id": oauth_client_id,
        "client_secret": oauth_client_secret,
        "scope": oauth_scope,
        "issuer": oauth_issuer,
        "grant": "authorization_code" if oauth_login else None,
        "redirect_uri": oauth_redirect_uri,
        "client_metadata_url": oauth_client_metadata_url,
    }
    if oauth or any(value is not None for value in section.values()):
        config["oauth"] = {key: value for key, value in section.items() if value is not None}
    call(as_json, lambda c: c.add_provider(config), render.provider)


def provider_config(
    name: str,
    command: str | None,
    url: str | None,
    openapi: str | None,
    base_url: str | None,
    header: list[str],
    env: list[str],
    timeout: float,
    command_flag: str = "--command",
) -> dict[str, Any]:
    """A provider's config from the options of `tool add` and `service add` (exactly one source)."""
    sources = [s for s in (command, url, openapi) if s]
    if len(sources) != 1:
        fail(f"give exactly one of {command_flag}, --url or --openapi", 2)
    config: dict[str, Any] = {"name": name, "kind": "openapi" if openapi else "mcp", "timeout_s": timeout}
    if command:
        config["command"] = shlex.split(command)
    if url:
        config["url"] = url
    if openapi:
        # A file is read by the server, which usually runs here: give it a path that works there too.
        local = Path(openapi)
        config["spec"] = str(local.resolve()) if "://" not in openapi and local.exists() else openapi
    if base_url:
        config["base_url"] = base_url
    config.update({"headers": _pairs(header, ":", "header"), "env": _pairs(env, "=", "environment variable")})
    return config


@tool_app.command("login")
def tool_login(
    name: Annotated[str, typer.Argument(help="A provider whose oauth grant is authorization_code.")],
    start_only: Annotated[
        bool, typer.Option("--start", help="Only print the address to open (finish later with --finish).")
    ] = False,
    finish: Annotated[
        str | None, typer.Option(help="Finish a login started before: the address the browser was sent to.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Log in to an MCP server for aigrid (OAuth): open the address, then paste where the browser lands."""
    if finish is None:
        call(as_json, lambda c: c.login_provider(name), render.login)
        if start_only:
            return
        try:
            finish = typer.prompt("The address the browser was sent back to", err=True)
        except typer.Abort:  # no terminal, or the input ended
            fail("no address given; finish later with: aigrid tool login NAME --finish ADDRESS", 2)
    redirect_url = finish
    call(as_json, lambda c: c.finish_login(name, redirect_url), render.provider)


@tool_app.command("list")
def tool_list(tenant: TenantFilter = None, as_json: JsonFlag = False) -> None:
    """List the tools agents can be granted."""
    call(as_json, lambda c: c.list_tools(tenant), render.tools)


@tool_app.command("providers")
def tool_providers(as_json: JsonFlag = False) -> None:
    """List tool providers, up or why they are down."""
    call(as_json, lambda c: c.list_providers(), render.providers)


@tool_app.command("rm")
def tool_rm(
    name: Annotated[str, typer.Argument(help="The provider added with 'aigrid tool add'.")],
    as_json: JsonFlag = False,
) -> None:
    """Close a provider and forget it; its tools are gone."""
    call(as_json, lambda c: c.remove_provider(name), render.provider)


@memory_app.command("search")
def memory_search(
    tenant: Tenant,
    query: Annotated[str | None, typer.Argument(help="Words to look for; none lists the newest.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's and the shared memories.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Search a tenant's memories by words (best first), or list the newest."""
    call(as_json, lambda c: c.memories(tenant, query, agent, limit), render.memories)


@memory_app.command("add")
def memory_add(
    tenant: Tenant,
    text: Annotated[str, typer.Argument(help="What to remember.")],
    key: Annotated[str | None, typer.Option(help="Replace what this key held.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's; otherwise shared by all.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Remember a text for an agent, or for all of a tenant's agents."""
    call(as_json, lambda c: c.remember(tenant, text, key, agent), render.memory)


@memory_app.command("forget")
def memory_forget(
    tenant: Tenant,
    memory_id: Annotated[int, typer.Argument(metavar="ID", help="The memory's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Forget a memory."""
    call(as_json, lambda c: c.forget(tenant, memory_id), render.memory)


def inbox(
    tenant: TenantFilter = None,
    after: Annotated[int, typer.Option(min=0, help="Only those after this id.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Show the owners' inbox: agents' notes and the results of triggered runs."""
    call(as_json, lambda c: c.inbox(tenant, after), render.inbox)


def audit(
    tenant: TenantFilter = None,
    pid: Annotated[str | None, typer.Option(help="Only this process's calls.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Show the audit log of tool calls, newest first."""
    call(as_json, lambda c: c.audit(tenant, pid, limit), render.audit)


class _Top:
    """Frames of `aigrid top`: live processes first, with tokens per second since the last frame."""

    def __init__(self, tenant: str | None, rows: int) -> None:
        self._tenant = tenant
        self._rows = rows
        self._seen: dict[str, tuple[float, int]] = {}

    def processes(self, client: AdminClient) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The processes a frame shows, as the API answers them, and how many are in each live state."""
        live = client.list_processes(self._tenant, ",".join(_LIVE), 1000)["data"]
        recent = client.list_processes(self._tenant, None, self._rows)["data"]
        counts = {state: sum(p["state"] == state for p in live) for state in _LIVE}
        rank = {state: i for i, state in enumerate(_LIVE)}
        live.sort(key=lambda p: (rank[p["state"]], -p["updated_at"]))
        return (live + [p for p in recent if p["state"] not in rank])[: self._rows], counts

    def frame(self, client: AdminClient) -> RenderableType:
        """One screenful: the counts per state, then the processes with their token rates."""
        now = time.monotonic()
        shown, counts = self.processes(client)
        rates: dict[str, float] = {}
        for p in shown:
            tokens = p["usage"]["prompt_tokens"] + p["usage"]["completion_tokens"]
            before = self._seen.get(p["pid"])
            if before is not None and now > before[0]:
                rates[p["pid"]] = (tokens - before[1]) / (now - before[0])
            self._seen[p["pid"]] = (now, tokens)
        summary = "  ".join(f"{state} {n}" for state, n in counts.items())
        heading = Text(f"aigrid top — {time.strftime('%H:%M:%S')}  {summary}", style="bold")
        return Group(heading, render.top(shown, rates))


def top(
    tenant: TenantFilter = None,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 2.0,
    rows: Annotated[int, typer.Option(min=1, max=1000, help="At most this many processes.")] = 40,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Watch processes live: what runs, what waits, tokens and cost, until Ctrl-C (--json: one frame)."""
    view = _Top(tenant, rows)
    try:
        with connect() as client:
            if as_json:
                emit_json({"object": "list", "data": view.processes(client)[0]})
                return
            if once:
                console().print(view.frame(client))
                return
            with Live(view.frame(client), console=console(), auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(view.frame(client), refresh=True)
    except CLIError as exc:
        fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        return
