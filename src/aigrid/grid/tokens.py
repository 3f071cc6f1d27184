"""Token estimates for requests whose backend cannot count exactly before answering.

Reservations must not undercount: an estimate of one token per three UTF-8 bytes is above the
real count for English (about four characters a token) and about right for Chinese (one
character, three bytes, about a token).
"""

from __future__ import annotations

from typing import Any

import orjson

_PER_MESSAGE = 4


def _text_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if value is None:
        return 0
    if isinstance(value, list):
        return sum(_text_bytes(part.get("text") if isinstance(part, dict) else part) for part in value)
    return len(orjson.dumps(value))


def estimate_prompt_tokens(endpoint: str, body: dict[str, Any]) -> int:
    """An upper estimate of a request's prompt tokens."""
    if endpoint == "chat":
        messages = body.get("messages") or []
        size = sum(
            _text_bytes(m.get("content")) + _text_bytes(m.get("tool_calls")) + _PER_MESSAGE * 3
            for m in messages
            if isinstance(m, dict)
        )
        if body.get("tools"):
            size += len(orjson.dumps(body["tools"]))
        return size // 3 + 3
    if endpoint == "embeddings":
        return _text_bytes(body.get("input")) // 3 + 1
    return _text_bytes(body.get("prompt")) // 3 + 1


def estimate_completion_tokens(payload: Any) -> int:
    """An estimate of the tokens in an answer that reported no usage."""
    if not isinstance(payload, dict):
        return 0
    size = 0
    for choice in payload.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message") or {}
        size += _text_bytes(message.get("content")) + _text_bytes(message.get("tool_calls"))
        size += _text_bytes(choice.get("text"))
    return (size + 3) // 4


def requested_max_tokens(body: dict[str, Any]) -> int | None:
    """The client's cap on answer tokens, from either spelling of the field."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
