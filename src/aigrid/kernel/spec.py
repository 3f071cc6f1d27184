"""An agent spec: the program a process runs, as a user or the compiler wrote it."""

from __future__ import annotations

import fnmatch
import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Priority = Literal["interactive", "background"]
Period = Literal["day", "month"]

# Tool names look like "shop.search" or "time.now"; a pattern may use * and ? ("shop.*").
MEMORY_TOOLS = "memory."
_TOOL_PATTERN = re.compile(r"^[A-Za-z0-9_.*?-]{1,128}$")


class SpecBudget(BaseModel):
    """What the agent may spend per period: tokens, cost (in the deployment's currency), or both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    period: Period = "day"
    tokens: int | None = Field(default=None, gt=0)
    cost: Decimal | None = Field(default=None, gt=0, max_digits=18, decimal_places=6)

    @model_validator(mode="after")
    def _something_capped(self) -> SpecBudget:
        if self.tokens is None and self.cost is None:
            raise ValueError("a budget needs tokens, cost or both")
        return self


class AgentSpec(BaseModel):
    """A versioned agent program: instructions, model, granted tools, approvals, budget, limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    description: str = Field(default="", max_length=2000)
    instructions: str = Field(min_length=1, max_length=100_000)
    model: str = Field(default="local", min_length=1, max_length=128)
    tools: tuple[str, ...] = Field(default=(), max_length=256)
    approval: tuple[str, ...] = Field(default=(), max_length=256)
    budget: SpecBudget | None = None
    priority: Priority = "interactive"
    max_steps: int = Field(default=20, ge=1, le=1000)
    memory: bool = True
    triggers: tuple[dict[str, Any], ...] = Field(default=(), max_length=64)

    @field_validator("tools", "approval")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            if not _TOOL_PATTERN.match(pattern):
                raise ValueError(f"'{pattern}' is not a tool name or pattern (letters, digits, _ . - * ?)")
        return patterns

    def grants(self, tool: str) -> bool:
        """Whether a process of this spec may call ``tool``; ``memory`` alone decides the memory tools."""
        if tool.startswith(MEMORY_TOOLS):
            return self.memory
        return any(fnmatch.fnmatchcase(tool, p) for p in self.tools)

    def needs_approval(self, tool: str) -> bool:
        """Whether a call to ``tool`` waits for a human yes."""
        return any(fnmatch.fnmatchcase(tool, p) for p in self.approval)
