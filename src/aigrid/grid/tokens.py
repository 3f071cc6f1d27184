"""Token estimates for requests whose backend cannot count exactly before answering.

Reservations must not undercount, or concurrent requests could overspend a budget: one token per
two UTF-8 bytes is above the real count for English (about four characters a token) and for
Chinese (three bytes a character, about a character a token), and every message is charged
the most a chat template adds around it.
"""

from __future__ import annotations

from typing import Any

import orjson

_PER_MESSAGE = 8
_PER_REQUEST = 8


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
            _text_bytes(m.get("content")) + _text_bytes(m.get("tool_calls"))
            for m in messages
            if isinstance(m, dict)
        )
        if body.get("tools"):
            size += len(orjson.dumps(body["tools"]))
        return (size + 1) // 2 + _PER_MESSAGE * len(messages) + _PER_REQUEST
    if endpoint == "embeddings":
        return (_text_bytes(body.get("input")) + 1) // 2 + 1
    return (_text_bytes(body.get("prompt")) + 1) // 2 + 1


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
