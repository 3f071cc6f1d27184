"""`aigrid mcp`'s resources: the tenant's agents' specs, processes' journals, and its inbox."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from aigrid.cli.mcp_grid import Grid, GridError

if TYPE_CHECKING:
    from mcp.shared.exceptions import MCPError
    from mcp_types import ReadResourceResult, Resource, ResourceTemplate

INBOX_URI = "aigrid://inbox"
AGENT_TEMPLATE = "aigrid://agents/{name}"
JOURNAL_TEMPLATE = "aigrid://processes/{pid}/journal"
JSON = "application/json"
# The newest processes listed as resources: a client that wants an older one reads it by its pid.
LISTED_PROCESSES = 20
# The inbox resource holds its newest messages: older ones are in `aigrid inbox`.
INBOX_MESSAGES = 100
_AGENT_URI = re.compile(r"aigrid://agents/([a-z][a-z0-9_-]{0,63})")
_JOURNAL_URI = re.compile(r"aigrid://processes/([A-Za-z0-9_.-]{1,64})/journal")


def agent_uri(name: str) -> str:
    """The resource URI of an agent's spec."""
    return AGENT_TEMPLATE.format(name=name)


def journal_uri(pid: str) -> str:
    """The resource URI of a process's journal."""
    return JOURNAL_TEMPLATE.format(pid=pid)


def not_found(uri: str, why: str) -> MCPError:
    """The error for a resource that is not there: invalid params with the URI, as the SDK's own server."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import INVALID_PARAMS

    return MCPError(INVALID_PARAMS, f"Resource not found: {uri} ({why})", data={"uri": uri})


def grid_failed(exc: GridError) -> MCPError:
    """The error for a call to aigrid that failed for another reason than a missing thing."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import INTERNAL_ERROR

    return MCPError(INTERNAL_ERROR, exc.message)


async def list_resources(grid: Grid) -> list[Resource]:
    """The inbox, every agent's spec and the newest processes' journals."""
    from mcp_types import Resource

    agents = await grid.agents()
    processes = await grid.processes(LISTED_PROCESSES)
    found = [
        Resource(
            uri=INBOX_URI,
            name="inbox",
            title="Inbox",
            description="Agents' notes to their owner and the results of runs nobody waited for.",
            mime_type=JSON,
        )
    ]
    for agent in agents:
        name = str(agent["name"])
        spec = agent.get("spec") if isinstance(agent.get("spec"), dict) else {}
        described = spec.get("description") if isinstance(spec, dict) else None
        found.append(
            Resource(
                uri=agent_uri(name),
                name=f"agent {name}",
                description=f"The spec of agent '{name}' (version {agent.get('version')})."
                + (f" {described}" if described else ""),
                mime_type=JSON,
            )
        )
    for process in processes:
        pid = str(process.get("pid"))
        found.append(
            Resource(
                uri=journal_uri(pid),
                name=f"journal {pid}",
                description=f"What process {pid} of agent '{process.get('agent')}' did, step by step "
                f"(now {process.get('state')}).",
                mime_type=JSON,
            )
        )
    return found


def templates() -> list[ResourceTemplate]:
    """The URI templates any agent's spec and any process's journal are read by."""
    from mcp_types import ResourceTemplate

    return [
        ResourceTemplate(
            uri_template=AGENT_TEMPLATE,
            name="agent",
            description="The newest spec of one of the tenant's agents, by its name.",
            mime_type=JSON,
        ),
        ResourceTemplate(
            uri_template=JOURNAL_TEMPLATE,
            name="journal",
            description="One of the tenant's processes, with every step it journaled, by its pid.",
            mime_type=JSON,
        ),
    ]


def _contents(uri: str, value: Any) -> ReadResourceResult:
    from mcp_types import ReadResourceResult, TextResourceContents

    text = json.dumps(value, indent=2, ensure_ascii=False)
    return ReadResourceResult(contents=[TextResourceContents(uri=uri, mime_type=JSON, text=text)])


async def read_resource(grid: Grid, uri: str) -> ReadResourceResult:
    """A resource's contents, as JSON; a not-found MCPError for a URI that names nothing of the tenant's."""
    try:
        if uri == INBOX_URI:
            return _contents(uri, {"messages": (await grid.inbox())[-INBOX_MESSAGES:]})
        if named := _AGENT_URI.fullmatch(uri):
            return _contents(uri, await grid.agent(named[1]))
        if named := _JOURNAL_URI.fullmatch(uri):
            process = await grid.process(named[1])
            return _contents(uri, {**process, "journal": await grid.journal(named[1])})
    except GridError as exc:
        if exc.not_found:
            raise not_found(uri, exc.message) from exc
        raise grid_failed(exc) from exc
    raise not_found(uri, f"aigrid serves {INBOX_URI}, {AGENT_TEMPLATE} and {JOURNAL_TEMPLATE}")
