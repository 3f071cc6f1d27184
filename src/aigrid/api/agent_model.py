"""Every agent is a model on the grid: ``agent:NAME`` on /v1/chat/completions runs a process of it.

The answer is an ordinary chat completion (or its SSE chunks), so any OpenAI client can call an
agent. The process's own model calls are metered by the grid as always; the call that started it
adds no ledger row of its own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from aigrid.api.scope import api_error_for, call_store
from aigrid.api.state import AppState
from aigrid.errors import APIError, bad_request, model_not_found
from aigrid.kernel.kernel import WAITING_FOR_SOMEONE, Kernel
from aigrid.spec import AGENT_NAME
from aigrid.store.accounts import AccountError, Principal
from aigrid.store.processes import ProcessRecord

AGENT_PREFIX = "agent:"
AGENT_TIMEOUT_S = 600.0
KEEPALIVE_S = 10.0
# The spec's own name pattern, so a name no agent can have is refused without a lookup.
_NAME = re.compile(AGENT_NAME)
_KEEPALIVE = b": keep-alive\n\n"
_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class AgentReply:
    """What the hot path sends for an agent call: a whole completion, or the stream of its chunks."""

    pid: str
    body: bytes | AgentStream


async def answer(state: AppState, principal: Principal, body: dict[str, Any]) -> AgentReply:
    """Start a process of the caller's agent named by ``body["model"]``; its answer, or its stream."""
    model = str(body["model"])
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", param="stream_options")
    text = _input(body.get("messages"))
    name = model.removeprefix(AGENT_PREFIX)
    # Agents belong to tenants: the admin key has none to call.
    if principal.is_admin or not _NAME.fullmatch(name):
        raise model_not_found(model)
    try:
        process = await state.kernel.spawn(principal.tenant_id, name, text, origin="chat")
    except AccountError as exc:
        raise (
            model_not_found(model) if exc.status == 404 else api_error_for(exc.status, exc.message)
        ) from exc
    if stream:
        include_usage = bool((options or {}).get("include_usage"))
        return AgentReply(process.pid, AgentStream(state.kernel, process, model, include_usage))
    ended = await state.kernel.wait(process.pid, AGENT_TIMEOUT_S)
    content = await _content(state.kernel, ended, model)
    return AgentReply(process.pid, orjson.dumps(_completion(ended, model, content)))


class AgentStream:
    """An agent's answer as SSE frames: the role chunk at once, keep-alives while the process runs."""

    def __init__(self, kernel: Kernel, process: ProcessRecord, model: str, include_usage: bool) -> None:
        self._kernel = kernel
        self._process = process
        self._model = model
        self._include_usage = include_usage

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """The frames, ending with ``[DONE]`` (or an error event, as a failed upstream stream does)."""
        pid = self._process.pid
        yield self._chunk(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + AGENT_TIMEOUT_S
        while True:
            left = deadline - loop.time()
            process = await self._kernel.wait(pid, max(0.0, min(KEEPALIVE_S, left)))
            if process.finished or process.state in WAITING_FOR_SOMEONE or left <= KEEPALIVE_S:
                break
            # Proxies and clients drop a silent connection; a comment line keeps it open.
            yield _KEEPALIVE
        try:
            content = await _content(self._kernel, process, self._model)
        except APIError as exc:
            yield b"data: " + exc.to_json() + b"\n\n"
            return
        yield self._chunk([{"index": 0, "delta": {"content": content}, "finish_reason": None}])
        yield self._chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if self._include_usage:
            yield self._chunk([], _usage(process))
        yield _DONE

    def abandon(self) -> None:
        """Nothing to give up: the process is durable and runs on when the client goes away."""

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": f"chatcmpl-{self._process.pid}",
            "object": "chat.completion.chunk",
            "created": _created(self._process),
            "model": self._model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def agent_models(state: AppState, principal: Principal) -> list[dict[str, Any]]:
    """The caller's agents as model objects named ``agent:NAME`` (none for the admin key)."""
    if principal.is_admin:
        return []
    stored = await call_store(state.agents.newest, principal.tenant_id)
    return [_model_object(principal, s.spec.name, s.created_at_us) for s in stored]


async def agent_model(state: AppState, principal: Principal, model: str) -> dict[str, Any] | None:
    """The model object of one of the caller's agents, or None if it has no such agent."""
    name = model.removeprefix(AGENT_PREFIX)
    if principal.is_admin or not _NAME.fullmatch(name):
        return None
    try:
        stored = await state.agents.calls(state.agents.get, principal.tenant_id, name)
    except AccountError:
        return None
    return _model_object(principal, name, stored.created_at_us)


def _model_object(principal: Principal, name: str, created_us: int) -> dict[str, Any]:
    return {
        "id": AGENT_PREFIX + name,
        "object": "model",
        "created": created_us // 1_000_000,
        "owned_by": principal.tenant,
    }


def _input(messages: Any) -> str:
    """The process's input: the last user message, after a transcript of the turns before it."""
    turns = turns_of(messages)
    last = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=None)
    if last is None or not turns[last][1].strip():
        raise bad_request("An agent needs a user message with text to work on.", param="messages")
    earlier = [f"{role}: {text}" for role, text in turns[:last] if text.strip()]
    if not earlier:
        return turns[last][1]
    return "Conversation so far:\n" + "\n".join(earlier) + "\n\nNow: " + turns[last][1]


def turns_of(messages: Any) -> list[tuple[str, str]]:
    """A chat request's messages as (role, text); a 400 for anything that is not a list of messages."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list of messages.", param="messages")
    turns: list[tuple[str, str]] = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request("Each message must be an object with a 'role'.", param="messages")
        turns.append((message["role"], message_text(message.get("content"))))
    return turns


def message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list (other parts say nothing to an agent)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "\n".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    raise bad_request("A message's 'content' must be a string or a list of parts.", param="messages")


async def _content(kernel: Kernel, process: ProcessRecord, model: str) -> str:
    """What the assistant says for a process as it stands; an error if it failed or was killed."""
    pid, reason = process.pid, process.reason or "no reason given"
    if process.state == "done":
        return process.result or ""
    if process.state in ("failed", "killed"):
        raise APIError(
            502,
            f"Agent '{model}' {process.state} (process {pid}): {reason}",
            type="api_error",
            code="agent_failed",
            headers={"x-aigrid-process": pid},
        )
    # Waiting for a person or a budget can take days: answer now, saying how to move it on.
    if process.state == "waiting_approval":
        ids = [a.id for a in await kernel.approvals(process.tenant_id) if a.pid == pid]
        how = f"`aigrid approve {ids[0]}` (or `aigrid deny {ids[0]}`)" if ids else "`aigrid approvals`"
        return (
            f"Agent '{model}' is waiting for a person's approval (process {pid}, {reason}). "
            f"Decide with {how} (see `aigrid approvals`); the process then goes on, and "
            f"`aigrid logs {pid}` shows its result."
        )
    if process.state == "suspended":
        return (
            f"Agent '{model}' is suspended (process {pid}): {reason}. It goes on when its budget allows, "
            f"or after `aigrid resume {pid}`; `aigrid logs {pid}` shows its result."
        )
    return (
        f"Agent '{model}' is still working after {AGENT_TIMEOUT_S:g} s (process {pid}, {process.state}). "
        f"It goes on by itself; `aigrid logs {pid}` shows its result."
    )


def _completion(process: ProcessRecord, model: str, content: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{process.pid}",
        "object": "chat.completion",
        "created": _created(process),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(process),
    }


def _created(process: ProcessRecord) -> int:
    return process.created_at_us // 1_000_000


def _usage(process: ProcessRecord) -> dict[str, int]:
    total = process.prompt_tokens + process.completion_tokens
    return {
        "prompt_tokens": process.prompt_tokens,
        "completion_tokens": process.completion_tokens,
        "total_tokens": total,
    }
