"""The `aigrid` command: serve the grid, and administer a running one over its HTTP API."""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from aigrid import __version__
from aigrid.cli import ask, cluster, compose, learn, mcp_server, render, services, system
from aigrid.cli.client import AdminClient, CLIError
from aigrid.cli.common import JsonFlag, Tenant, TenantFilter, call, fail, waiting

# States a process leaves without anyone's help: `run --wait` waits through these and no others.
_WORKING = frozenset({"ready", "running", "waiting_tool", "sleeping"})
_FIRST_LOOK_S = 0.1
_LOOK_S = 1.0


class Period(StrEnum):
    """How often a budget starts over."""

    DAY = "day"
    MONTH = "month"
    TOTAL = "total"


class BudgetKind(StrEnum):
    """What a budget limits."""

    TOKENS = "tokens"
    COST = "cost"


class Interval(StrEnum):
    """The width of a usage time bucket."""

    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


app = typer.Typer(no_args_is_help=True, add_completion=False)
tenant_app = typer.Typer(no_args_is_help=True, help="Create and list tenants.")
key_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
budget_app = typer.Typer(no_args_is_help=True, help="Set, list and remove token and cost budgets.")
limits_app = typer.Typer(no_args_is_help=True, help="Set and show requests- and tokens-per-minute limits.")
app.add_typer(tenant_app, name="tenant")
tenant_users_app = typer.Typer(
    no_args_is_help=True, help="The users a tenant acts for: whose wallet its entries may pay from."
)
tenant_app.add_typer(tenant_users_app, name="users")
app.add_typer(key_app, name="key")
app.add_typer(budget_app, name="budget")
app.add_typer(limits_app, name="limits")
agent_app = typer.Typer(no_args_is_help=True, help="Store agent specs and read their versions.")
app.add_typer(agent_app, name="agent")
agent_app.command("create")(compose.create)
agent_app.command("edit")(compose.edit)
app.add_typer(system.tool_app, name="tool")
app.add_typer(services.service_app, name="service")
app.command("ask")(ask.ask)
app.add_typer(system.memory_app, name="memory")
app.command("top")(system.top)
app.command("cluster")(cluster.cluster)
app.command("audit")(system.audit)
app.command("inbox")(system.inbox)
app.command("mcp")(mcp_server.mcp)
app.command("feedback")(learn.feedback)
app.command("traces")(learn.traces)
app.add_typer(learn.learn_app, name="learn")


def _version(value: bool) -> None:
    if value:
        Console().print(f"aigrid {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """aigrid: a metered, OpenAI-compatible LLM gateway; admin commands use AIGRID_URL, AIGRID_ADMIN_KEY."""


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file declaring models and deployments.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8700,
    data_dir: Annotated[Path, typer.Option(help="Where the database and admin key live.")] = Path(".aigrid"),
    node: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            "--node",
            help="This server's node name in a cluster sharing one database (default: the config's "
            "cluster.node, else host:port).",
        ),
    ] = None,
) -> None:
    """Run the gateway until interrupted."""
    from aigrid.config import ConfigError
    from aigrid.server import serve as run_server

    try:
        run_server(config, host, port, data_dir, node=node)
    except ConfigError as exc:
        fail(str(exc), 2)


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Argument(help="The new tenant's name.")], as_json: JsonFlag = False
) -> None:
    """Create a tenant."""
    call(
        as_json,
        lambda c: c.create_tenant(name),
        lambda r: Text(f"Created tenant {r['name']} (id {r['id']})."),
    )


@tenant_app.command("list")
def tenant_list(as_json: JsonFlag = False) -> None:
    """List tenants."""
    call(as_json, lambda c: c.list_tenants(), render.tenants)


TenantName = Annotated[str, typer.Argument(help="The tenant's name.")]
UserName = Annotated[str, typer.Argument(help="The user's name (as the wallet service knows it).")]


@tenant_users_app.command("list")
def tenant_users(tenant: TenantName, as_json: JsonFlag = False) -> None:
    """List the users a tenant acts for besides itself."""
    call(
        as_json,
        lambda c: c.tenant_users(tenant),
        lambda r: Text("\n".join(u["user"] for u in r["data"]) or f"Tenant {tenant} acts only for itself."),
    )


@tenant_users_app.command("add")
def tenant_users_add(tenant: TenantName, user: UserName, as_json: JsonFlag = False) -> None:
    """Let a tenant act for a user: its entries may pay from the user's wallet."""
    call(
        as_json,
        lambda c: c.add_tenant_user(tenant, user),
        lambda r: Text(f"Tenant {tenant} acts for {user}."),
    )


@tenant_users_app.command("remove")
def tenant_users_remove(tenant: TenantName, user: UserName, as_json: JsonFlag = False) -> None:
    """Stop a tenant acting for a user."""
    call(
        as_json,
        lambda c: c.remove_tenant_user(tenant, user),
        lambda r: Text(f"Tenant {tenant} no longer acts for {user}."),
    )


@key_app.command("create")
def key_create(
    tenant: Tenant,
    name: Annotated[str | None, typer.Option("--name", help="A label for the key.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an API key for a tenant; its secret is shown only once."""
    call(as_json, lambda c: c.create_key(tenant, name), render.created_key)


@key_app.command("list")
def key_list(tenant: TenantFilter = None, as_json: JsonFlag = False) -> None:
    """List API keys (never their secrets)."""
    call(as_json, lambda c: c.list_keys(tenant), render.keys)


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id.")], as_json: JsonFlag = False
) -> None:
    """Revoke an API key at once."""
    call(as_json, lambda c: c.revoke_key(key_id), lambda r: Text(f"Revoked key {key_id}."))


def _positive_amount(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise typer.BadParameter(f"{value!r} is not a decimal amount.") from None
    if not amount.is_finite() or amount <= 0:
        raise typer.BadParameter("the amount must be positive.")
    return format(amount, "f")


@budget_app.command("set")
def budget_set(
    tenant: Tenant,
    period: Annotated[Period, typer.Option(help="When the budget starts over.")],
    tokens: Annotated[int | None, typer.Option(min=1, help="Limit on prompt plus completion tokens.")] = None,
    cost: Annotated[
        str | None,
        typer.Option(metavar="CNY", callback=_positive_amount, help="Limit on cost, in CNY (e.g. 12.50)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add or replace a tenant's token or cost budget for a period."""
    if (tokens is None) == (cost is None):
        fail("give exactly one of --tokens or --cost.", 2)
    call(as_json, lambda c: c.set_budget(tenant, period.value, tokens=tokens, cost=cost), render.budgets)


@budget_app.command("list")
def budget_list(tenant: TenantFilter = None, as_json: JsonFlag = False) -> None:
    """List budgets with what is spent and reserved this period."""
    call(as_json, lambda c: c.list_budgets(tenant), render.budgets)


@budget_app.command("remove")
def budget_remove(
    tenant: Tenant,
    kind: Annotated[BudgetKind, typer.Option(help="Which budget: tokens or cost.")],
    period: Annotated[Period, typer.Option(help="The budget's period.")],
    as_json: JsonFlag = False,
) -> None:
    """Remove a tenant's budget."""
    call(
        as_json,
        lambda c: c.remove_budget(tenant, kind.value, period.value),
        lambda r: Text(f"Removed the {period.value} {kind.value} budget of {tenant}."),
    )


@limits_app.command("set")
def limits_set(
    tenant: Tenant,
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute; omit for no limit.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Tokens per minute; omit for no limit.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Set a tenant's rate limits; a limit left out is removed."""
    call(as_json, lambda c: c.set_limits(tenant, rpm, tpm), render.limits)


@limits_app.command("show")
def limits_show(tenant: TenantFilter = None, as_json: JsonFlag = False) -> None:
    """Show the rate limits of every tenant that has one."""
    call(as_json, lambda c: c.list_limits(tenant), render.limits)


@app.command()
def usage(
    group_by: Annotated[
        str,
        typer.Option(
            help="Comma-separated: tenant, model, deployment, agent, process, key, endpoint, status."
        ),
    ] = "tenant,model",
    interval: Annotated[Interval | None, typer.Option(help="Bucket usage by time.")] = None,
    since: Annotated[
        str | None, typer.Option(metavar="T", help="From this ISO 8601 date/time (UTC if no zone).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(metavar="T", help="Up to this ISO 8601 date/time (exclusive).")
    ] = None,
    tenant: TenantFilter = None,
    as_json: JsonFlag = False,
) -> None:
    """Show usage and cost as a bill, grouped and optionally bucketed by time; by tenant, with a bar each."""
    budgets: list[dict[str, Any]] | None = None

    def bill(client: AdminClient) -> dict[str, Any]:
        nonlocal budgets
        result = client.usage(
            group_by=group_by,
            interval=interval.value if interval else None,
            since=since,
            until=until,
            tenant=tenant,
        )
        if not as_json and "tenant" in (result.get("group_by") or []):
            budgets = _readable_budgets(client, tenant)
        return result

    call(as_json, bill, lambda result: render.usage(result, budgets))


def _readable_budgets(client: AdminClient, tenant: str | None) -> list[dict[str, Any]] | None:
    """The budgets beside a bill; None when this key may not read them (403) or the server has none (404)."""
    try:
        data: list[dict[str, Any]] = client.list_budgets(tenant)["data"]
    except CLIError as exc:
        if exc.status in (403, 404):
            return None
        raise
    return data


@app.command()
def deployments(as_json: JsonFlag = False) -> None:
    """Show every deployment's health, load and speed."""
    call(as_json, lambda c: c.deployments(), render.deployments)


def main() -> None:
    """Run the aigrid command line."""
    app(prog_name="aigrid")


def _spec_file(path: Path) -> dict[str, Any]:
    """An agent spec from a JSON or TOML file; a clear error and exit 2 otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", 2)
    try:
        spec = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        fail(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}", 2)
    if not isinstance(spec, dict):
        fail(f"{path} must hold one agent spec (an object)", 2)
    return spec


@agent_app.command("save")
def agent_save(
    file: Annotated[Path, typer.Argument(help="The spec, as JSON or TOML (.toml).")],
    tenant: Tenant,
    as_json: JsonFlag = False,
) -> None:
    """Store a spec as its agent's next version (nothing changes if it equals the newest)."""
    spec = _spec_file(file)
    call(as_json, lambda c: c.save_agent(spec, tenant), render.saved_agent)


@agent_app.command("list")
def agent_list(tenant: TenantFilter = None, as_json: JsonFlag = False) -> None:
    """List agents, the newest version of each."""
    call(as_json, lambda c: c.list_agents(tenant), render.agents)


@agent_app.command("show")
def agent_show(
    name: Annotated[str, typer.Argument(help="The agent's name.")],
    tenant: Tenant,
    version: Annotated[int | None, typer.Option(min=1, help="This version, not the newest.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show an agent's spec."""
    call(as_json, lambda c: c.get_agent(name, tenant, version), render.agent)


@agent_app.command("versions")
def agent_versions(
    name: Annotated[str, typer.Argument(help="The agent's name.")], tenant: Tenant, as_json: JsonFlag = False
) -> None:
    """List every version of an agent."""
    call(as_json, lambda c: c.agent_versions(name, tenant), render.agents)


@app.command("run")
def run_agent(
    agent: Annotated[str, typer.Argument(help="The agent to run (its newest version).")],
    text: Annotated[str, typer.Argument(help="What the agent starts from.")],
    tenant: Tenant,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the process until it ends or needs a person.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a process of an agent; with --wait, show how it ended (exit 1 if it failed)."""
    if not wait:
        call(as_json, lambda c: c.start_process(agent, text, tenant), render.process)
        return
    ended = call(as_json, lambda c: _follow(c, c.start_process(agent, text, tenant), as_json), render.ended)
    if ended["state"] in ("failed", "killed"):
        raise typer.Exit(1)


def _follow(client: AdminClient, process: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """The process once it has ended or waits for a person, looked at less often as time goes by."""
    pid, pause = process["pid"], _FIRST_LOOK_S
    try:
        with waiting(f"process {pid} is {process['state']}", quiet=as_json) as say:
            while process["state"] in _WORKING:
                time.sleep(pause)
                pause = min(_LOOK_S, pause * 2)
                process = client.get_process(pid)
                say(f"process {pid} is {process['state']}, {process['steps']} steps")
    except KeyboardInterrupt:
        message = f"stopped waiting; process {pid} goes on: follow it with 'aigrid logs {pid}'"
        raise CLIError(message, exit_code=130) from None
    return process


@app.command("ps")
def ps(
    tenant: TenantFilter = None,
    state: Annotated[str | None, typer.Option(help="Only these states, comma-separated.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """List processes, newest first."""
    call(as_json, lambda c: c.list_processes(tenant, state, limit), render.processes)


@app.command("logs")
def logs(pid: Annotated[str, typer.Argument(help="The process id.")], as_json: JsonFlag = False) -> None:
    """Show a process's journal, step by step."""
    call(as_json, lambda c: c.process_journal(pid), render.journal)


def _process_command(name: str, summary: str, request: Callable[[AdminClient, str], dict[str, Any]]) -> None:
    """A command that acts on one process or approval by id and shows the process after."""

    def command(
        target: Annotated[str, typer.Argument(metavar="ID", help="The process's or the approval's id.")],
        as_json: JsonFlag = False,
    ) -> None:
        call(as_json, lambda c: request(c, target), render.process)

    command.__doc__ = summary
    app.command(name)(command)


def _signal(signal: str) -> Callable[[AdminClient, str], dict[str, Any]]:
    return lambda client, pid: client.signal_process(pid, signal)


def _decision(decision: str) -> Callable[[AdminClient, str], dict[str, Any]]:
    return lambda client, approval_id: client.decide(approval_id, decision)


_process_command("pause", "Pause a process (it takes no more steps until resumed).", _signal("pause"))
_process_command("resume", "Resume a paused process.", _signal("resume"))
_process_command("kill", "End a process for good.", _signal("kill"))


@app.command("approvals")
def approvals(tenant: TenantFilter = None, as_json: JsonFlag = False) -> None:
    """List the tool calls waiting for a yes or no."""
    call(as_json, lambda c: c.approvals(tenant), render.approvals)


_process_command("approve", "Let a waiting tool call run.", _decision("approve"))
_process_command("deny", "Refuse a waiting tool call; the agent is told.", _decision("deny"))
