"""System calls: the tool registry, and running one call with a time limit and a size limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from aigrid.kernel.spec import AgentSpec

# What the model gets back from one call at most; the rest is cut and said to be cut.
MAX_RESULT_CHARS = 16_000
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: the process, its tenant, and the call's idempotency key (``pid:step``)."""

    pid: str
    tenant_id: int
    idempotency_key: str


Handler = Callable[[dict[str, Any], CallContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Tool:
    """A callable tool: its name, what it does, its JSON-schema parameters and its handler."""

    name: str
    description: str
    handler: Handler
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    timeout_s: float = DEFAULT_TIMEOUT_S

    def schema(self) -> dict[str, Any]:
        """The tool as the model sees it (OpenAI's function-tool shape)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a call returned to the model: its text, whether it succeeded, whether it was refused."""

    ok: bool
    content: str
    refused: bool = False


class ToolRegistry:
    """The tools a kernel can call, by name."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> None:
        """Add a tool; a name is registered once."""
        if tool.name in self._tools:
            raise ValueError(f"a tool named '{tool.name}' is already registered")
        self._tools[tool.name] = tool

    def granted(self, spec: AgentSpec) -> list[Tool]:
        """The registered tools a spec grants, by name."""
        return [t for name, t in sorted(self._tools.items()) if spec.grants(name)]

    def get(self, name: str) -> Tool | None:
        """The tool of that name, if registered."""
        return self._tools.get(name)

    async def call(self, tool: Tool, arguments: dict[str, Any], context: CallContext) -> ToolOutcome:
        """Run a call: a hang times out and an error is returned as text, never raised."""
        try:
            async with asyncio.timeout(tool.timeout_s):
                value = await tool.handler(arguments, context)
        except TimeoutError:
            return ToolOutcome(False, f"error: {tool.name} did not answer within {tool.timeout_s:g} s")
        except Exception as exc:  # a tool's failure is the model's information, not the kernel's crash
            return ToolOutcome(False, f"error: {tool.name} failed: {type(exc).__name__}: {exc}")
        text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
        if len(text) > MAX_RESULT_CHARS:
            text = text[:MAX_RESULT_CHARS] + f"\n[cut: the result had {len(text)} characters]"
        return ToolOutcome(True, text)


async def _now(_arguments: dict[str, Any], _context: CallContext) -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def builtin_tools() -> list[Tool]:
    """The tools every kernel has."""
    return [Tool("time.now", "The current date and time (UTC, ISO 8601).", _now)]
