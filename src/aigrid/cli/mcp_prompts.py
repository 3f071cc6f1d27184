"""`aigrid mcp`'s prompts (run an agent, write a new one, explain a process) and their completions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aigrid.cli.mcp_grid import Grid, GridError
from aigrid.cli.mcp_resources import AGENT_TEMPLATE, JOURNAL_TEMPLATE, grid_failed, read_resource

if TYPE_CHECKING:
    from mcp.shared.exceptions import MCPError
    from mcp_types import Completion, GetPromptResult, Prompt, PromptMessage

RUN_AGENT = "run_agent"
NEW_AGENT = "new_agent"
EXPLAIN_PROCESS = "explain_process"
# The most values one completion answers with (the protocol's own bound).
COMPLETIONS = 100
# Processes offered when completing a pid: the newest, which are the ones people ask about.
COMPLETED_PROCESSES = 50
_ARGUMENTS: dict[str, list[tuple[str, str]]] = {
    RUN_AGENT: [("agent", "The agent's name."), ("input", "What the agent starts from.")],
    NEW_AGENT: [("description", "What the agent should do, in a sentence or two.")],
    EXPLAIN_PROCESS: [("pid", "The process's id (p-...).")],
}
_DESCRIPTIONS = {
    RUN_AGENT: "Run one of the tenant's aigrid agents on an input, with its spec at hand.",
    NEW_AGENT: "Write a new aigrid agent spec from a sentence, with the tools and models it may use.",
    EXPLAIN_PROCESS: "Explain what an aigrid process did, step by step, from its journal.",
}


def prompts() -> list[Prompt]:
    """Every prompt, with its arguments (all required)."""
    from mcp_types import Prompt, PromptArgument

    return [
        Prompt(
            name=name,
            description=_DESCRIPTIONS[name],
            arguments=[PromptArgument(name=a, description=d, required=True) for a, d in arguments],
        )
        for name, arguments in _ARGUMENTS.items()
    ]


def _invalid(message: str) -> MCPError:
    from mcp.shared.exceptions import MCPError
    from mcp_types import INVALID_PARAMS

    return MCPError(INVALID_PARAMS, message)


def _checked(name: str, given: dict[str, str] | None) -> dict[str, str]:
    """The prompt's arguments, each present and not blank; an invalid-params MCPError otherwise."""
    if name not in _ARGUMENTS:
        raise _invalid(f"Unknown prompt: {name} (aigrid has {', '.join(_ARGUMENTS)})")
    given = given or {}
    known = [a for a, _ in _ARGUMENTS[name]]
    extra = sorted(set(given) - set(known))
    if extra:
        raise _invalid(f"Prompt '{name}' takes no argument {', '.join(map(repr, extra))}")
    missing = [a for a in known if not str(given.get(a) or "").strip()]
    if missing:
        raise _invalid(f"Prompt '{name}' needs the argument(s) {', '.join(map(repr, missing))}")
    return {a: given[a].strip() for a in known}


def _user(text: str) -> PromptMessage:
    from mcp_types import PromptMessage, TextContent

    return PromptMessage(role="user", content=TextContent(type="text", text=text))


async def _embedded(grid: Grid, uri: str) -> PromptMessage:
    """A user message holding a resource, read now: the model sees what the prompt is about."""
    from mcp_types import EmbeddedResource, PromptMessage

    contents = (await read_resource(grid, uri)).contents[0]
    return PromptMessage(role="user", content=EmbeddedResource(type="resource", resource=contents))


async def get_prompt(grid: Grid, name: str, given: dict[str, str] | None) -> GetPromptResult:
    """A prompt's messages, for checked arguments; an invalid-params MCPError for a bad name or argument."""
    from mcp_types import GetPromptResult

    arguments = _checked(name, given)
    try:
        if name == RUN_AGENT:
            agent = arguments["agent"]
            spec = await _for_argument(grid, AGENT_TEMPLATE.format(name=agent), f"No agent named '{agent}'")
            ask = (
                f"Run the aigrid agent '{agent}' with the tool `agent_{agent}` on the input below, "
                f"then report its answer. Its spec follows.\n\nInput:\n{arguments['input']}"
            )
            return GetPromptResult(description=f"Run agent '{agent}'", messages=[_user(ask), spec])
        if name == NEW_AGENT:
            return GetPromptResult(
                description="Write a new agent spec",
                messages=[_user(await _new_agent_ask(grid, arguments["description"]))],
            )
        pid = arguments["pid"]
        journal = await _for_argument(grid, JOURNAL_TEMPLATE.format(pid=pid), f"No process {pid}")
        ask = (
            f"Explain what the aigrid process {pid} did, step by step, and why it ended as it did "
            "(or what it waits for). Its record and journal follow."
        )
        return GetPromptResult(description=f"Explain process {pid}", messages=[_user(ask), journal])
    except GridError as exc:
        raise grid_failed(exc) from exc


async def _for_argument(grid: Grid, uri: str, missing: str) -> PromptMessage:
    """The resource an argument names, embedded; an invalid-params MCPError when it names nothing."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import INVALID_PARAMS

    try:
        return await _embedded(grid, uri)
    except MCPError as exc:
        if exc.code == INVALID_PARAMS:
            raise _invalid(f"{missing} for this tenant") from exc
        raise


async def _new_agent_ask(grid: Grid, description: str) -> str:
    tools = [
        {"name": t.get("name"), "description": t.get("description")}
        for t in await grid.tools()
        if isinstance(t.get("name"), str)
    ]
    models = await grid.models()
    return (
        "Write an aigrid agent spec, as one JSON object, for an agent that does this:\n"
        f"{description}\n\n"
        "Fields: name (lowercase letters, digits, - and _, starting with a letter), description "
        "(one sentence), instructions (what the agent is told, in full), model (one of the models "
        "below), tools (names or patterns such as shop.*), approval (the tools that need a person's "
        "yes before each call), memory (true or false), max_steps, and triggers when it should run "
        'by itself ({"kind": "cron", "cron": "0 8 * * 1-5", "timezone": "UTC"}, {"kind": '
        '"interval", "every_s": 3600}, {"kind": "webhook"} or {"kind": "message", "from_agents": '
        '["*"]}). Grant only the tools it needs, and ask for approval before anything that spends '
        "money or writes to others. Save it with `aigrid agent save FILE`.\n\n"
        f"Models: {', '.join(models) or 'none served'}\n"
        f"Tools: {json.dumps(tools, ensure_ascii=False)}"
    )


async def complete(grid: Grid, ref: str, argument: str, value: str) -> Completion:
    """Values for a prompt's or a template's argument that start with ``value``: agent names and pids.

    ``ref`` is ``prompt:NAME`` or ``resource:URI-TEMPLATE``; an invalid-params MCPError for one that
    names no prompt or template of aigrid's, none for an argument that has nothing to complete.
    """
    from mcp_types import Completion

    known = {f"prompt:{p}" for p in _ARGUMENTS} | {
        f"resource:{AGENT_TEMPLATE}",
        f"resource:{JOURNAL_TEMPLATE}",
    }
    if ref not in known:
        raise _invalid(f"Nothing to complete for {ref.replace(':', ' ', 1)}")
    try:
        agents = (ref, argument) in ((f"resource:{AGENT_TEMPLATE}", "name"), (f"prompt:{RUN_AGENT}", "agent"))
        if agents:
            candidates = [str(a["name"]) for a in await grid.agents()]
        elif argument == "pid":
            candidates = [str(p.get("pid")) for p in await grid.processes(COMPLETED_PROCESSES)]
        else:
            candidates = []
    except GridError as exc:
        raise grid_failed(exc) from exc
    matching = [c for c in candidates if c.startswith(value)]
    return Completion(
        values=matching[:COMPLETIONS], total=len(matching), has_more=len(matching) > COMPLETIONS
    )
