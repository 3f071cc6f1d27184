"""An agent spec: the program a process runs, as a user or the compiler wrote it."""

from __future__ import annotations

import fnmatch
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

Priority = Literal["interactive", "background"]
Period = Literal["day", "month"]

# Tool names look like "shop.search" or "time.now"; a pattern may use * and ? ("shop.*").
MEMORY_TOOLS = "memory."
AGENT_NAME = r"^[a-z][a-z0-9_-]{0,63}$"
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


Missed = Literal["run_once", "skip"]


class _Timed(BaseModel):
    """A trigger that fires at times: what the process is told, and what a server that was down does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = Field(default="", max_length=10_000)  # the process's input; empty: "It is <time>."
    # Firings missed while the server was down: one run at start for all of them, or none.
    missed: Missed = "run_once"


class CronTrigger(_Timed):
    """Fires at the times of a cron expression (minute hour day month weekday), in a time zone."""

    kind: Literal["cron"] = "cron"
    cron: str = Field(min_length=1, max_length=128)
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            # five fields only: croniter would also take seconds and years, which cron does not
            raise ValueError(
                f"'{cron}' is not a cron expression of five fields (minute hour day month week-day)"
            )
        return cron

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, timezone: str) -> str:
        return _zone(timezone).key

    def next_after(self, after: datetime) -> datetime | None:
        """The first firing strictly after ``after``."""
        local = after.astimezone(_zone(self.timezone))
        return croniter(self.cron, local).get_next(datetime)


class IntervalTrigger(_Timed):
    """Fires every ``every_s`` seconds, the first time one interval after the agent is saved."""

    kind: Literal["interval"] = "interval"
    every_s: int = Field(ge=1, le=366 * 86_400)

    def next_after(self, after: datetime) -> datetime | None:
        """The firing one interval after ``after`` (the previous firing, so the rhythm never drifts)."""
        return after + timedelta(seconds=self.every_s)


class OnceTrigger(_Timed):
    """Fires once, at a time with its offset."""

    kind: Literal["once"] = "once"
    at: AwareDatetime

    def next_after(self, after: datetime) -> datetime | None:
        """``at``, if it is after ``after``."""
        return self.at if self.at > after else None


class WebhookTrigger(BaseModel):
    """Fires on ``POST /v1/agents/{name}/trigger`` with the agent's secret; the body is the input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["webhook"] = "webhook"


class MessageTrigger(BaseModel):
    """Fires when another agent of the tenant sends a message (``agent.message``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["message"] = "message"
    from_agents: tuple[str, ...] = Field(default=("*",), max_length=64)  # names or patterns

    def accepts(self, agent: str) -> bool:
        """Whether ``agent`` may start this one by a message."""
        return any(fnmatch.fnmatchcase(agent, p) for p in self.from_agents)


TimedTrigger = CronTrigger | IntervalTrigger | OnceTrigger
Trigger = Annotated[
    CronTrigger | IntervalTrigger | OnceTrigger | WebhookTrigger | MessageTrigger, Field(discriminator="kind")
]


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"'{name}' is not a known time zone (such as UTC or Asia/Shanghai)") from exc


class AgentSpec(BaseModel):
    """A versioned agent program: instructions, model, granted tools, approvals, budget, limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=AGENT_NAME)
    description: str = Field(default="", max_length=2000)
    instructions: str = Field(min_length=1, max_length=100_000)
    model: str = Field(default="local", min_length=1, max_length=128)
    tools: tuple[str, ...] = Field(default=(), max_length=256)
    approval: tuple[str, ...] = Field(default=(), max_length=256)
    budget: SpecBudget | None = None
    priority: Priority = "interactive"
    max_steps: int = Field(default=20, ge=1, le=1000)
    memory: bool = True
    triggers: tuple[Trigger, ...] = Field(default=(), max_length=64)
    # Where the agent's results and notes to its owner also go, beside the inbox.
    webhook: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2000)

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

    def message_trigger(self) -> MessageTrigger | None:
        """The trigger that lets other agents start this one, if it has one."""
        return next((t for t in self.triggers if isinstance(t, MessageTrigger)), None)

    def needs_approval(self, tool: str) -> bool:
        """Whether a call to ``tool`` waits for a human yes."""
        return any(fnmatch.fnmatchcase(tool, p) for p in self.approval)
