"""Following an agent's process for an MCP tool call: its journal as progress and log messages.

The process's steps are read from its journal (``GET /v1/processes/{pid}/journal?after=N``) as
they are journaled. Progress counts journaled steps, with one unit more for the end, so that every
notification is larger than the last (the protocol asks for that) and the last one has a total.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aigrid.cli.mcp_grid import Grid, GridError

POLL_S = 0.2
# The first polls come sooner: a one-step agent is often done within a few tens of milliseconds.
FIRST_POLL_S = 0.025
# How long a cancelled call waits for aigrid to kill its process.
KILL_S = 5.0
# A tool's failure is logged with the start of what it said: enough to see why, not a page of it.
_SAID = 300

Level = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


class Reporter(Protocol):
    """Where a followed process's progress and steps go: the MCP request that started it."""

    async def progress(self, done: float, total: float | None, message: str) -> None:
        """Tell the client how far the process is."""

    async def log(self, level: Level, logger: str, data: dict[str, Any]) -> None:
        """Send the client one log message (the reporter drops it below the client's level)."""


@dataclass(frozen=True, slots=True)
class Line:
    """One journaled step as a person reads it."""

    level: Level
    text: str


def _names(calls: Any) -> str:
    names = [
        str(c.get("function", {}).get("name"))
        for c in calls
        if isinstance(c, dict) and isinstance(c.get("function"), dict)
    ]
    return ", ".join(names) or "a tool"


def describe(step: dict[str, Any], pid: str) -> Line:
    """What a journaled step says: the level it is logged at, and its line."""
    kind, tool = step.get("kind"), step.get("tool", "a tool")
    if kind == "model_request":
        return Line("debug", f"asking the model ({step.get('messages')} messages, {step.get('tools')} tools)")
    if kind == "model_response":
        message = step.get("message") if isinstance(step.get("message"), dict) else {}
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        return Line("info", f"the model calls {_names(calls)}" if calls else "the model answered")
    if kind == "tool_call":
        return Line("info", f"calling {tool}")
    if kind == "tool_result":
        if step.get("ok"):
            return Line("info", f"{tool} answered")
        return Line("warning", f"{tool} failed: {str(step.get('content', ''))[:_SAID]}")
    if kind == "approval":
        status, approval = step.get("status"), f"{pid}:{step.get('seq')}"
        if status == "pending":
            how = f"`aigrid approve {approval}` or `aigrid deny {approval}`"
            return Line("notice", f"{tool} waits for a person's approval ({how})")
        return Line("info" if status == "approved" else "warning", f"a person {status} the call to {tool}")
    if kind == "signal":
        return Line("notice", f"signalled: {step.get('signal') or step.get('reason') or 'no reason given'}")
    if kind == "note":
        return Line("info", str(step.get("text") or step.get("reason") or "a note"))
    return Line("debug", f"step {kind}")


class Follower:
    """One process, followed from its start to an answer (or a GridError saying why there is none)."""

    def __init__(self, grid: Grid, agent: str, reporter: Reporter) -> None:
        self._grid, self._agent, self._reporter = grid, agent, reporter
        self._logger = f"agent:{agent}"
        self._seen = 0  # the last journaled step reported
        self._waiting: dict[str, str] = {}  # call id -> approval id, for calls still waiting

    async def run(self, text: str) -> str:
        """Run the agent on ``text`` and wait for its result, reporting as it goes.

        A call the client cancels kills the process: nobody waits for its answer any more, and an
        agent should not go on acting for nobody.
        """
        process = await self._grid.start(self._agent, text)
        pid = str(process["pid"])
        try:
            return await self._follow(pid, process)
        except asyncio.CancelledError:
            import anyio  # the SDK's own async layer, imported only when `aigrid mcp` runs

            # Shielded, and bounded: the kill must get out although this task is being cancelled.
            with anyio.CancelScope(shield=True), anyio.move_on_after(KILL_S), contextlib.suppress(GridError):
                await self._grid.kill(pid)
            raise

    async def _follow(self, pid: str, process: dict[str, Any]) -> str:
        await self._reporter.progress(0, None, f"process {pid} started")
        deadline, delay = time.monotonic() + self._grid.timeout_s, FIRST_POLL_S
        while True:
            await self._read_journal(pid, process)
            state, reason = process.get("state"), process.get("reason") or "no reason given"
            if state == "done":
                await self._reporter.progress(self._seen + 1, self._seen + 1, "done")
                return str(process.get("result") or "")
            if state in ("failed", "killed"):
                await self._say("error", pid, f"the process {state}: {reason}")
                raise GridError(f"agent '{self._agent}' {state} (process {pid}): {reason}")
            # A process that waits for a person or a budget could wait for days: say how to move it on.
            if state == "waiting_approval":
                raise GridError(self._approval_note(pid, reason))
            if state == "suspended":
                await self._say("warning", pid, f"the process is suspended: {reason}")
                raise GridError(
                    f"agent '{self._agent}' is suspended (process {pid}): {reason}. It goes on when its "
                    f"budget allows, or after `aigrid resume {pid}`; follow it with `aigrid logs {pid}`."
                )
            if time.monotonic() >= deadline:
                await self._say("warning", pid, f"no answer within {self._grid.timeout_s:g} s")
                raise GridError(
                    f"agent '{self._agent}' did not finish within {self._grid.timeout_s:g} s; its process "
                    f"{pid} is still {state}: follow it with `aigrid logs {pid}`."
                )
            await asyncio.sleep(delay)
            delay = min(POLL_S, delay * 2)
            process = await self._grid.process(pid)

    async def _read_journal(self, pid: str, process: dict[str, Any]) -> None:
        """Log the steps journaled since the last read, and report progress when there are any."""
        steps = process.get("steps")
        if not isinstance(steps, int) or steps <= self._seen:
            return
        latest = ""
        for step in await self._grid.journal(pid, self._seen):
            seq = step.get("seq")
            if not isinstance(seq, int) or seq <= self._seen:
                continue
            self._seen = seq
            line = describe(step, pid)
            self._note_approval(step, pid)
            await self._reporter.log(
                line.level,
                self._logger,
                {"message": line.text, "pid": pid, "step": seq, "kind": step.get("kind")},
            )
            latest = line.text
        if latest:
            await self._reporter.progress(self._seen, None, latest)

    def _note_approval(self, step: dict[str, Any], pid: str) -> None:
        if step.get("kind") != "approval":
            return
        call = str(step.get("id"))
        if step.get("status") == "pending":
            self._waiting.setdefault(call, f"{pid}:{step.get('seq')}")
        else:
            self._waiting.pop(call, None)

    async def _say(self, level: Level, pid: str, text: str) -> None:
        await self._reporter.log(level, self._logger, {"message": text, "pid": pid})

    def _approval_note(self, pid: str, reason: str) -> str:
        ids = list(self._waiting.values())
        how = f"`aigrid approve {ids[-1]}` (or `aigrid deny {ids[-1]}`)" if ids else "`aigrid approvals`"
        return (
            f"agent '{self._agent}' waits for a person's approval (process {pid}, {reason}): "
            f"decide with {how}, then follow it with `aigrid logs {pid}`."
        )
