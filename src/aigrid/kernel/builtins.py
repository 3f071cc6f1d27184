"""The kernel's own system calls: time, memory, notes to the owner, messages and child processes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Protocol

from aigrid.kernel.inbox import Inbox
from aigrid.kernel.tools import CallContext, Sleep, Tool
from aigrid.store.accounts import AccountError
from aigrid.store.memory import TENANT_WIDE, MemoryRecord, MemoryStore
from aigrid.store.processes import ProcessRecord, ProcessStore

# How deep processes may spawn processes: a loop of agents calling each other ends here.
MAX_SPAWN_DEPTH = 5
_SEARCH_LIMIT = 20


class Spawner(Protocol):
    """Starts processes on behalf of a tool call (the kernel)."""

    async def spawn(
        self,
        tenant_id: int,
        agent: str,
        input_text: str,
        parent_pid: str | None = None,
        spawn_key: str | None = None,
        origin: str = "api",
        sender: str | None = None,
    ) -> ProcessRecord:
        """A new process, or the one this ``spawn_key`` already started."""


def _text(arguments: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = arguments.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{name}' must be a non-empty string")
    return value


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_STRING = {"type": "string"}


class SystemCalls:
    """The built-in tools, bound to the stores and the kernel they act on."""

    def __init__(
        self,
        memory: MemoryStore,
        inbox: Inbox,
        processes: ProcessStore,
        spawner: Spawner,
    ) -> None:
        self._memory = memory
        self._inbox = inbox
        self._processes = processes
        self._spawner = spawner

    def tools(self) -> list[Tool]:
        """Every built-in tool."""
        return [
            Tool("time.now", "The current date and time (UTC, ISO 8601).", self._now),
            Tool(
                "memory.write",
                "Remember a text for later processes; with a key, replace what that key held. "
                "shared=true makes it visible to every agent of the owner.",
                self._write,
                _object(
                    {"text": _STRING, "key": _STRING, "shared": {"type": "boolean"}},
                    ["text"],
                ),
            ),
            Tool(
                "memory.read",
                "Read what was remembered under a key (this agent's, else the shared one).",
                self._read,
                _object({"key": _STRING}, ["key"]),
            ),
            Tool(
                "memory.search",
                "Search this agent's and the shared memories by words; best matches first.",
                self._search,
                _object(
                    {"query": _STRING, "limit": {"type": "integer", "minimum": 1, "maximum": 20}}, ["query"]
                ),
            ),
            Tool(
                "notify.owner",
                "Tell the owner: notify, alert or remind the person who owns this agent "
                "with a message in their inbox.",
                self._notify,
                _object({"text": _STRING}, ["text"]),
            ),
            Tool(
                "agent.message",
                "Send a message to another agent: it starts working on it at once; you get its pid.",
                self._message,
                _object({"agent": _STRING, "text": _STRING}, ["agent", "text"]),
            ),
            Tool(
                "process.spawn",
                "Run another agent on an input as a child process and wait for its answer.",
                self._spawn,
                _object({"agent": _STRING, "input": _STRING}, ["agent", "input"]),
            ),
        ]

    async def _now(self, _arguments: dict[str, Any], _context: CallContext) -> str:
        return datetime.now(UTC).isoformat(timespec="seconds")

    async def _write(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        body = _text(arguments, "text")
        key = _text(arguments, "key", required=False)
        owner = TENANT_WIDE if arguments.get("shared") is True else context.agent
        record = await asyncio.to_thread(self._memory.write, context.tenant_id, owner, str(body), key)
        return {"remembered": record.id, "key": record.key, "shared": owner == TENANT_WIDE}

    async def _read(self, arguments: dict[str, Any], context: CallContext) -> Any:
        key = str(_text(arguments, "key"))
        record = await asyncio.to_thread(
            self._memory.read, context.tenant_id, (context.agent, TENANT_WIDE), key
        )
        return f"nothing is remembered under '{key}'" if record is None else _shown(record)

    async def _search(self, arguments: dict[str, Any], context: CallContext) -> Any:
        query = str(_text(arguments, "query"))
        limit = arguments.get("limit", 5)
        if not isinstance(limit, int) or not 1 <= limit <= _SEARCH_LIMIT:
            raise ValueError(f"'limit' must be an integer from 1 to {_SEARCH_LIMIT}")
        found = await asyncio.to_thread(
            self._memory.search, context.tenant_id, query, (context.agent, TENANT_WIDE), limit
        )
        return [_shown(r) for r in found] or "no memory matches"

    async def _notify(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        body = str(_text(arguments, "text"))
        process = await self._processes.calls(self._processes.get, context.pid)
        return {"notified": await self._inbox.note(process, body)}

    async def _message(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        agent = str(_text(arguments, "agent"))
        body = str(_text(arguments, "text"))
        letter = f"A message from agent '{context.agent}' (process {context.pid}):\n\n{body}"
        process = await self._start(context, agent, letter, None, "message")
        return {"sent_to": agent, "pid": process.pid, "state": process.state}

    async def _spawn(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        agent = str(_text(arguments, "agent"))
        task = str(_text(arguments, "input"))
        depth = await asyncio.to_thread(self._depth, context.pid)
        if depth >= MAX_SPAWN_DEPTH:
            raise ValueError(f"processes may nest {MAX_SPAWN_DEPTH} deep at most; do this one yourself")
        child = await self._start(context, agent, task, context.pid, "spawn")
        if not child.finished:
            raise Sleep(child.pid)
        answer = child.result if child.state == "done" else f"{child.state}: {child.reason}"
        return {"pid": child.pid, "state": child.state, "answer": answer}

    async def _start(
        self, context: CallContext, agent: str, input_text: str, parent_pid: str | None, origin: str
    ) -> ProcessRecord:
        try:
            return await self._spawner.spawn(
                context.tenant_id,
                agent,
                input_text,
                parent_pid,
                context.idempotency_key,
                origin=origin,
                sender=context.agent,
            )
        except AccountError as exc:  # no such agent, for instance: the model should hear why
            raise ValueError(exc.message) from exc

    def _depth(self, pid: str) -> int:
        depth = 0
        parent: str | None = self._processes.get(pid).parent_pid
        while parent is not None and depth <= MAX_SPAWN_DEPTH:
            depth += 1
            parent = self._processes.get(parent).parent_pid
        return depth


def _shown(record: MemoryRecord) -> dict[str, Any]:
    """A memory as the model reads it."""
    return {"id": record.id, "key": record.key, "text": record.text, "shared": record.agent == TENANT_WIDE}
