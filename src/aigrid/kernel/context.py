"""Keeping a conversation inside the model's context; the journal always keeps everything.

The rule: the instructions and the input stay. Older turns (a model answer together with the tool
results it asked for) are dropped, oldest first, until the estimate fits three quarters of the
context, leaving room for the answer. The newest turn always stays; if it alone is too long, its
tool results are cut. The instructions then say how many turns were left out.
"""

from __future__ import annotations

from typing import Any

import orjson

# A conservative estimate: English runs near 4 characters a token, JSON and code nearer 3.
CHARS_PER_TOKEN = 3
_PER_MESSAGE = 4
_SHARE_FOR_PROMPT = 0.75
_MIN_TOOL_CHARS = 200
_CUT_NOTE_CHARS = 64  # room for the note that says a result was cut


def estimate_tokens(value: Any) -> int:
    """About how many tokens a message, a list of them, or a tool schema takes."""
    if isinstance(value, list):
        return sum(estimate_tokens(v) for v in value)
    if isinstance(value, dict) and "role" in value:
        return _PER_MESSAGE + len(orjson.dumps(value)) // CHARS_PER_TOKEN
    return len(orjson.dumps(value)) // CHARS_PER_TOKEN


def _turns(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The messages after the input, grouped: each model answer with the tool results that follow."""
    turns: list[list[dict[str, Any]]] = []
    for message in messages:
        if message.get("role") == "tool" and turns:
            turns[-1].append(message)
        else:
            turns.append([message])
    return turns


def fit(
    messages: list[dict[str, Any]], context_tokens: int, tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The conversation as sent to a model with ``context_tokens`` of context (see the module rule)."""
    budget = int(context_tokens * _SHARE_FOR_PROMPT) - estimate_tokens(tools)
    if estimate_tokens(messages) <= budget:
        return messages
    head, turns = messages[:2], _turns(messages[2:])
    dropped = 0
    while len(turns) > 1 and estimate_tokens(head) + sum(estimate_tokens(t) for t in turns) > budget:
        turns.pop(0)
        dropped += 1
    system = dict(head[0])
    if dropped:
        system["content"] = (
            f"{system.get('content') or ''}\n\n[{dropped} earlier turn(s) of this task were left out "
            "to fit the model's context; their results are no longer shown.]"
        )
    kept = [system, head[1], *(m for turn in turns for m in turn)]
    over = estimate_tokens(kept) - budget
    results = [i for i, m in enumerate(kept) if i >= 2 and m.get("role") == "tool"]
    if over > 0 and results:
        # The newest turn alone is too long: its tool results share what room is left.
        total = sum(len(str(kept[i]["content"])) for i in results)
        each = max(_MIN_TOOL_CHARS, (total - over * CHARS_PER_TOKEN) // len(results) - _CUT_NOTE_CHARS)
        for i in results:
            content = str(kept[i]["content"])
            if len(content) > each:
                note = f"\n[cut to fit the context: {len(content)} characters]"
                kept[i] = {**kept[i], "content": content[:each] + note}
    return kept
