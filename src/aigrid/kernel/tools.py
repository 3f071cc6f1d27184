"""System calls: the tool registry, and running one call with a time limit and a size limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from aigrid.spec import AgentSpec

# What the model gets back from one call at most; the rest is cut and said to be cut.
MAX_RESULT_CHARS = 16_000
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: the process, its tenant and agent, and the call's idempotency key (``pid:step``)."""

    pid: str
    tenant_id: int
    idempotency_key: str
    agent: str = ""


class Sleep(Exception):
    """Raised by a tool whose answer waits on another process: the caller sleeps until it ends."""

    def __init__(self, until_pid: str) -> None:
        super().__init__(f"waiting for process {until_pid}")
        self.until_pid = until_pid


class Refusal(ValueError):
    """A call the kernel turns down before it reaches the tool (the tool is told nothing)."""


Handler = Callable[[dict[str, Any], CallContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Tool:
    """A callable tool: its name, what it does, its JSON-schema parameters and its handler."""

    name: str
    description: str
    handler: Handler
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def wire_name(self) -> str:
        """The name the model sees: OpenAI-style APIs allow no dots in function names."""
        return wire_name(self.name)

    def schema(self) -> dict[str, Any]:
        """The tool as the model sees it (OpenAI's function-tool shape)."""
        return {
            "type": "function",
            "function": {
                "name": self.wire_name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def wire_name(name: str) -> str:
    """``shop.search`` as a model may call it: ``shop__search``."""
    return name.replace(".", "__")


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a call returned to the model: its text, whether it succeeded, whether it was refused."""

    ok: bool
    content: str
    refused: bool = False
    sleep_until: str | None = None  # the process whose end this call waits for


@dataclass(frozen=True, slots=True)
class Registered:
    """A tool as registered: who may see it (one tenant, or all for None) and where it came from."""

    tool: Tool
    tenant_id: int | None
    provider: str | None


class ToolRegistry:
    """The tools a kernel can call, by name; a provider's tools may be one tenant's alone."""

    def __init__(self) -> None:
        self._tools: dict[str, Registered] = {}
        self._wire: dict[str, str] = {}

    def register(self, tool: Tool, tenant_id: int | None = None, provider: str | None = None) -> None:
        """Add a tool; a name (and the name the model sees) is registered once."""
        self.add_all([tool], tenant_id, provider)

    def add_all(self, tools: list[Tool], tenant_id: int | None = None, provider: str | None = None) -> None:
        """Add several tools, all or none."""
        names = [t.name for t in tools]
        wires = [t.wire_name for t in tools]
        for name, wire in zip(names, wires, strict=True):
            if name in self._tools or wire in self._wire or names.count(name) > 1 or wires.count(wire) > 1:
                raise ValueError(f"a tool named '{name}' is already registered")
        for tool in tools:
            self._tools[tool.name] = Registered(tool, tenant_id, provider)
            self._wire[tool.wire_name] = tool.name

    def remove_provider(self, provider: str) -> int:
        """Take away a provider's tools; how many there were."""
        gone = [name for name, r in self._tools.items() if r.provider == provider]
        for name in gone:
            del self._wire[self._tools.pop(name).tool.wire_name]
        return len(gone)

    def visible(self, tenant_id: int | None) -> list[Registered]:
        """The tools a tenant's agents can be granted (every tool for None), by name."""
        return [
            r
            for _, r in sorted(self._tools.items())
            if tenant_id is None or r.tenant_id is None or r.tenant_id == tenant_id
        ]

    def granted(self, spec: AgentSpec, tenant_id: int | None = None) -> list[Tool]:
        """The tools a spec grants that its tenant can see, by name."""
        return [r.tool for r in self.visible(tenant_id) if spec.grants(r.tool.name)]

    def get(self, name: str, tenant_id: int | None = None) -> Tool | None:
        """The tool called ``name`` (or by the name the model sees), if the tenant can see it."""
        entry = self._tools.get(self._wire.get(name, name))
        if entry is None or (tenant_id is not None and entry.tenant_id not in (None, tenant_id)):
            return None
        return entry.tool

    async def call(self, tool: Tool, arguments: dict[str, Any], context: CallContext) -> ToolOutcome:
        """Run a call: a hang times out and an error is returned as text, never raised."""
        try:
            async with asyncio.timeout(tool.timeout_s):
                value = await tool.handler(arguments, context)
        except Sleep as sleep:
            return ToolOutcome(True, str(sleep), sleep_until=sleep.until_pid)
        except Refusal as refusal:
            return ToolOutcome(False, f"refused: {refusal}", refused=True)
        except TimeoutError:
            return ToolOutcome(False, f"error: {tool.name} did not answer within {tool.timeout_s:g} s")
        except Exception as exc:  # a tool's failure is the model's information, not the kernel's crash
            return ToolOutcome(False, f"error: {tool.name} failed: {type(exc).__name__}: {exc}")
        text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
        if len(text) > MAX_RESULT_CHARS:
            text = text[:MAX_RESULT_CHARS] + f"\n[cut: the result had {len(text)} characters]"
        return ToolOutcome(True, text)
