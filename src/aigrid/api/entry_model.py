"""The super entry as a model: ``entry`` on /v1/chat/completions, so any chat client can use it.

The first turn plans and answers with the summary to confirm, naming the entry; a reply of yes
(or no) to that turn confirms (or declines) it. The request's ``user`` field, which OpenAI's API
has for the end user, names whose wallet pays.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from aigrid.api.agent_model import turns_of
from aigrid.api.scope import call_store_async
from aigrid.entry.service import EntryService
from aigrid.errors import bad_request
from aigrid.store.accounts import Principal
from aigrid.store.entries import EntryRecord

ENTRY_MODEL = "entry"
_YES = frozenset(["yes", "y", "ok", "okay", "sure", "confirm", "go", "go ahead", "do it", "yes please"])
_NO = frozenset(["no", "n", "cancel", "stop", "decline", "no thanks", "don't"])
_ASKING = re.compile(r"\(entry (ent-[0-9a-f]{16})\)")


@dataclass(frozen=True, slots=True)
class _Turn:
    text: str
    asked: str | None  # the entry the assistant's last turn asked to confirm


async def answer(
    entries: EntryService, principal: Principal, body: dict[str, Any]
) -> tuple[str, bytes | Frames]:
    """The entry, and the chat completion (or its SSE frames) answering the conversation in ``body``."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false.", param="stream")
    user = body.get("user") or principal.tenant
    if not isinstance(user, str):
        raise bad_request("'user' must be a string: the user whose wallet pays.", param="user")
    turn = _turn(body.get("messages"))
    reply = " ".join(turn.text.lower().strip(" .!").split())
    if turn.asked is not None and reply in _YES:
        work = entries.confirm(principal.tenant_id, turn.asked)
    elif turn.asked is not None and reply in _NO:
        work = entries.decline(principal.tenant_id, turn.asked)
    else:
        work = entries.ask(principal.tenant_id, user, turn.text)
    entry = await call_store_async(work)
    content = _content(entry)
    if stream:
        return entry.id, Frames(entry, content)
    return entry.id, orjson.dumps(_completion(entry, content))


def _turn(messages: Any) -> _Turn:
    turns = turns_of(messages)
    role, text = turns[-1]
    if role != "user" or not text.strip():
        raise bad_request("The last message must be the user's, with text.", param="messages")
    before = [t for r, t in turns[:-1] if r == "assistant"]
    asked = _ASKING.search(before[-1]) if before else None
    return _Turn(text, asked[1] if asked else None)


def _content(entry: EntryRecord) -> str:
    if entry.state == "awaiting_confirmation" and entry.summary is not None:
        return f"{entry.summary['text']}\n\nReply yes to go ahead, or no to cancel. (entry {entry.id})"
    return entry.answer or f"Entry {entry.id} is {entry.state}; GET /v1/entry/{entry.id} shows how it goes."


def _completion(entry: EntryRecord, content: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{entry.id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": ENTRY_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class Frames:
    """The answer as SSE chunks: the role, the content, the stop, then ``[DONE]``."""

    def __init__(self, entry: EntryRecord, content: str) -> None:
        self._entry = entry
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """The frames, in order."""
        for delta, finish in (
            ({"role": "assistant", "content": ""}, None),
            ({"content": self._content}, None),
            ({}, "stop"),
        ):
            chunk = {
                "id": f"chatcmpl-{self._entry.id}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": ENTRY_MODEL,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"

    def abandon(self) -> None:
        """Nothing to give up: the entry is already journaled."""
