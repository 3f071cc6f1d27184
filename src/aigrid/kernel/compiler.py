"""Natural language is the source code: a one-sentence description compiled into an agent spec.

What well-kept code can decide, it decides: the schedule comes from the time library (``when``),
the tools from a full-text search over the registry (``tool_search``: the strong matches of the
sentence without its schedule), the approval policy from a stated rule (tools that spend money,
send, book or delete wait for a person's yes), the budget and priority from defaults. The model
writes only what needs language: the agent's name, its instructions and, when a description states
a schedule the library cannot read, a cron expression. (On the held-out compiler suite, the small
embedded model chose tools worse than the search does; see ``bench/compiler.py``.) With experience
(specs that were verified or saved for similar descriptions, handed in through ``SpecRecall``), the
tools are what most of the nearest examples granted, plus what the search found and at least one
example granted; the examples are also shown to the model as worked examples. With a tool choice
learned from all of them (``ToolChoice``, ``aigrid.learn.tool_choice``), each tool it knows is
chosen as it says, the others as the search says. It answers under
a JSON-schema grammar, so its answer always parses; the spec is then validated, and a refusal goes
back to the model once with the reason. What still fails is a clear ``CompileError``; nothing
broken is ever saved.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from aigrid.errors import APIError
from aigrid.kernel.tool_search import search_tools, strong
from aigrid.kernel.tools import Tool
from aigrid.kernel.when import When, parse_when
from aigrid.spec import MEMORY_TOOLS, AgentSpec, CronTrigger, OnceTrigger, TimedTrigger

# Asks the model (tenant, messages, JSON schema of the answer) and returns its answer's text.
WriteFn = Callable[[int, list[dict[str, Any]], dict[str, Any]], Awaitable[str]]

MAX_DESCRIPTION_CHARS = 2000
# The longest instructions the model may write (llama.cpp refuses the grammar of 1,200 or more).
_MAX_INSTRUCTIONS = 400
# How much of a refused answer goes back to the model with the reason: enough to see, not to overflow.
_ECHOED_CHARS = 800
# A description with no tool to use and no schedule needs at least this many words to mean something.
_MIN_WORDS_ALONE = 4
DEFAULT_BUDGET = {"period": "day", "tokens": 200_000}
# An operation named with one of these words acts on the world in a way a person should confirm.
_CONSEQUENTIAL = frozenset(
    [
        "pay",
        "buy",
        "order",
        "purchase",
        "transfer",
        "send",
        "book",
        "reserve",
        "delete",
        "remove",
        "cancel",
        "refund",
        "charge",
        "checkout",
    ]
)
# Words that say a description means a schedule, for when the time library found none.
_TIME_WORDS = frozenset(
    [
        "every",
        "each",
        "daily",
        "hourly",
        "weekly",
        "monthly",
        "yearly",
        "tomorrow",
        "tonight",
        "morning",
        "evening",
        "night",
        "noon",
        "midnight",
        "weekday",
        "weekdays",
        "weekend",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ]
)
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,40}$")
_SYSTEM = (
    "You turn a user's description of an agent into parts of its spec. Answer with JSON only. "
    "name: 2 to 4 lowercase words joined by hyphens, saying what the agent does. "
    "instructions: what the agent must do on each run, as direct orders to it, keeping every detail "
    "of the description (products, places, limits, prices, who to tell), in at most three sentences."
)


@dataclass(frozen=True, slots=True)
class SpecExample:
    """A worked example: a description and the parts of the spec that were right for it."""

    text: str
    tools: tuple[str, ...]
    name: str
    instructions: str
    trigger: str | None = None  # its timed trigger's kind (cron, interval, once), None for none


# The worked examples for a tenant's description, nearest first (the experience memory's lookup).
SpecRecall = Callable[[int, str], Awaitable[list[SpecExample]]]
# Each tool something learned about, and whether a tenant's description needs it ({}: no opinion).
ToolChoice = Callable[[int, str], Awaitable[dict[str, bool]]]


class CompileError(Exception):
    """A description that yields no valid spec; the message says why, for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Draft:
    """A compiled spec not saved yet: the spec, the same as readable YAML, and how it was decided."""

    spec: AgentSpec
    text: str
    notes: tuple[str, ...]
    diff: str | None = None  # for an edit: what changes from the current version


def readable(spec: AgentSpec) -> str:
    """The spec as YAML, in field order, for a person to read and confirm."""
    return str(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100))


def spec_diff(before: AgentSpec, after: AgentSpec, before_label: str, after_label: str) -> str:
    """A unified diff of two specs as a person reads them; empty when they read the same."""
    return "".join(
        difflib.unified_diff(
            readable(before).splitlines(keepends=True),
            readable(after).splitlines(keepends=True),
            before_label,
            after_label,
        )
    )


def needs_approval(tool: str) -> bool:
    """The stated rule: a tool whose operation spends, sends, books or deletes waits for a person's yes."""
    operation = tool.lower().partition(".")[2] or tool.lower()
    return any(word in _CONSEQUENTIAL for word in re.split(r"[._-]", operation))


class Compiler:
    """Compiles descriptions into agent specs, and change requests into new versions."""

    def __init__(
        self,
        write: WriteFn,
        model: str | Callable[[], str] = "local",
        recall: SpecRecall | None = None,
        choose: ToolChoice | None = None,
    ) -> None:
        self._write = write
        self._model = model
        self._recall = recall
        self._choose = choose

    async def compile(
        self,
        tenant_id: int,
        description: str,
        tools: list[Tool],
        now: datetime,
        timezone: str = "UTC",
        taken: Collection[str] = (),
    ) -> Draft:
        """A spec for ``description``, with tools from ``tools`` and a name not in ``taken``."""
        description = _checked(description, "description")
        when = _when(description, now, timezone)
        found = await self._recall(tenant_id, description) if self._recall is not None else []
        examples = _usable(found, tools)
        dated = when if when is not None and _is_a_date(when, examples) else None
        when = None if dated is not None else when
        learned = await self._choose(tenant_id, description) if self._choose is not None else {}
        chosen = _tools_for(description, when, tools, examples, learned)
        if not chosen and when is None and len(re.findall(r"[^\W\d_]{2,}", description)) < _MIN_WORDS_ALONE:
            raise CompileError("there is too little to go on: say in a sentence what the agent should do")
        notes = [f"schedule: {when.summary} (from '{when.phrase}')" if when else "schedule: none stated"]
        if dated is not None:
            notes.append(
                f"'{dated.phrase}' read as what the task is about, not when it runs, as in similar agents"
            )
        ask_cron = when is None and dated is None and _mentions_time(description)
        prompt = _prompt(description, when.summary if when else None, chosen, ask_cron, examples)

        def build(answer: dict[str, Any]) -> AgentSpec:
            trigger = when.trigger if when else _cron(answer, timezone) if ask_cron else None
            fields = {
                "name": _unique(_name(answer, description), taken),
                "description": description,
                "instructions": str(answer.get("instructions") or "").strip() or description,
                "model": self._model if isinstance(self._model, str) else self._model(),
                "tools": [t.name for t in chosen],
                "approval": [t.name for t in chosen if needs_approval(t.name)],
                "budget": DEFAULT_BUDGET,
                "priority": "background" if trigger else "interactive",
                "triggers": [trigger.model_dump(mode="json")] if trigger else [],
            }
            return AgentSpec.model_validate(fields)

        spec = await self._validated(tenant_id, prompt, _schema(ask_cron, None), build)
        source = (
            "what verified agents taught and search"
            if learned
            else f"search and {len(examples)} similar agent(s)"
            if examples
            else "search"
        )
        notes.append(f"tools found by {source}: " + (", ".join(t.name for t in chosen) or "none"))
        if spec.approval:
            notes.append("these wait for your yes before they run: " + ", ".join(spec.approval))
        return Draft(spec, readable(spec), tuple(notes))

    async def edit(
        self,
        tenant_id: int,
        current: AgentSpec,
        change: str,
        tools: list[Tool],
        now: datetime,
        timezone: str = "UTC",
    ) -> Draft:
        """The next version of ``current`` with ``change`` made; its name stays."""
        change = _checked(change, "change")
        when = _when(change, now, timezone)
        added = [t for t in _tools_for(change, when, tools) if not current.grants(t.name)]
        prompt = [
            {"role": "system", "content": _SYSTEM + " Keep what the change does not touch."},
            {
                "role": "user",
                "content": f"The agent now:\n{readable(current)}\nThe change: {change}\n\n"
                + _tool_list(added),
            },
        ]
        schema = _schema(False, current.name)

        def build(answer: dict[str, Any]) -> AgentSpec:
            triggers = list(current.triggers)
            if when is not None:  # a new schedule replaces the timed ones; webhooks and messages stay
                triggers = [t for t in triggers if not isinstance(t, TimedTrigger)] + [when.trigger]
            fields = {
                **current.model_dump(mode="json"),
                "instructions": str(answer.get("instructions") or "").strip() or current.instructions,
                "tools": _added(current.tools, [t.name for t in added]),
                "approval": _added(current.approval, [t.name for t in added if needs_approval(t.name)]),
                "triggers": [t.model_dump(mode="json") for t in triggers],
            }
            return AgentSpec.model_validate(fields)

        spec = await self._validated(tenant_id, prompt, schema, build)
        text = readable(spec)
        diff = spec_diff(current, spec, "current", "new")
        notes = [f"schedule: {when.summary} (from '{when.phrase}')"] if when else []
        return Draft(spec, text, tuple(notes), diff or "(no change)")

    async def _validated(
        self,
        tenant_id: int,
        prompt: list[dict[str, Any]],
        schema: dict[str, Any],
        build: Callable[[dict[str, Any]], AgentSpec],
    ) -> AgentSpec:
        """The spec from the model's answer; a refusal goes back to the model once, with the reason."""
        text = await self._asked(tenant_id, prompt, schema)
        try:
            return build(_parsed(text))
        except (ValidationError, _Retry) as exc:
            reason = _reason(exc)
        retry = [
            *prompt,
            {"role": "assistant", "content": text[:_ECHOED_CHARS]},
            {"role": "user", "content": f"That was refused: {reason}. Answer again, fixing it."},
        ]
        try:
            return build(_parsed(await self._asked(tenant_id, retry, schema)))
        except (ValidationError, _Retry) as exc:
            raise CompileError(f"could not make a valid agent from this: {_reason(exc)}") from exc

    async def _asked(self, tenant_id: int, prompt: list[dict[str, Any]], schema: dict[str, Any]) -> str:
        """The model's answer; a refusal of the request itself is the user's to hear, as a CompileError.

        Rate limits and overloads stay APIErrors (429, 5xx): trying again later is the answer.
        """
        try:
            return await self._write(tenant_id, prompt, schema)
        except APIError as exc:
            if exc.status == 429 or exc.status >= 500:
                raise
            raise CompileError(f"the model could not write the spec: {exc.message}") from exc


class _Retry(Exception):
    """A model answer that cannot be used, with the reason to send back to it."""


def _parsed(text: str) -> dict[str, Any]:
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError as exc:  # a model without grammar support may still stray
        raise _Retry(f"the answer was not JSON: {exc}") from exc
    if not isinstance(answer, dict):
        raise _Retry("the answer was not a JSON object")
    return answer


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {str(first['msg']).removeprefix('Value error, ')}"
    return str(exc)


def _checked(text: str, what: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise CompileError(f"the {what} is empty: say in a sentence what the agent should do")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise CompileError(f"the {what} is longer than {MAX_DESCRIPTION_CHARS} characters; say it shorter")
    return text


def _when(text: str, now: datetime, timezone: str) -> When | None:
    try:
        return parse_when(text, now, timezone)
    except ValueError as exc:  # an unknown time zone, for one
        raise CompileError(str(exc)) from exc


def _is_a_date(when: When, examples: Sequence[SpecExample]) -> bool:
    """Whether a one-time phrase is the task's object ("the flight on December 6") rather than when to
    run: most of the nearest verified agents had no schedule. A recurrence always is a schedule."""
    if not isinstance(when.trigger, OnceTrigger) or not examples:
        return False
    return sum(e.trigger is None for e in examples) > len(examples) / 2


def _usable(found: list[SpecExample], tools: list[Tool]) -> list[SpecExample]:
    """The examples whose every tool the tenant can still grant."""
    names = {t.name for t in tools}
    return [e for e in found if e.tools and set(e.tools) <= names]


def _tools_for(
    text: str,
    when: When | None,
    tools: list[Tool],
    examples: Sequence[SpecExample] = (),
    learned: Mapping[str, bool] | None = None,
) -> list[Tool]:
    """The tools ``text`` asks for: the strong search matches of its words but the schedule's.

    With what verified agents taught (``learned``), a tool it knows is chosen as it says, and one
    it does not know as the search says. Else, with worked examples, a tool is chosen when most of
    them granted it, or when the search found it and at least one of them granted it: the examples
    say what similar sentences needed, the search keeps a tool no example had a reason to grant.
    Memory is the spec's switch, not a grant: its tools are never chosen.
    """
    grantable = [t for t in tools if not t.name.startswith(MEMORY_TOOLS)]
    wanted = text.replace(when.phrase, " ") if when else text
    found = [f.tool for f in strong(search_tools(grantable, wanted))]
    if learned:
        return [t for t in grantable if learned.get(t.name, t in found)]
    if not examples:
        return found
    votes = Counter(name for e in examples for name in set(e.tools))
    majority = len(examples) // 2 + 1
    searched = {t.name for t in found}
    return [t for t in grantable if votes[t.name] >= majority or (votes[t.name] and t.name in searched)]


def _mentions_time(text: str) -> bool:
    words = {w.strip(".,;:!?").lower() for w in text.split()}
    return bool(words & _TIME_WORDS)


def _tool_list(tools: list[Tool]) -> str:
    if not tools:
        return "It has no tools."
    return "Its tools:\n" + "\n".join(f"- {t.name}: {t.description}" for t in tools)


def _prompt(
    description: str,
    schedule: str | None,
    tools: list[Tool],
    ask_cron: bool,
    examples: Sequence[SpecExample] = (),
) -> list[dict[str, Any]]:
    """The conversation: worked examples as earlier turns (name and instructions), then the description."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": _SYSTEM}]
    for example in examples:
        messages.append({"role": "user", "content": f"Description: {example.text}"})
        answer = {"name": example.name, "instructions": example.instructions}
        messages.append({"role": "assistant", "content": orjson.dumps(answer).decode()})
    parts = [f"Description: {description}"]
    parts.append(f"Schedule, already understood: {schedule}" if schedule else "Schedule: none understood.")
    if ask_cron:
        parts.append("cron: the schedule the description states, as a five-field cron expression.")
    parts.append(_tool_list(tools))
    return [*messages, {"role": "user", "content": "\n".join(parts)}]


def _schema(ask_cron: bool, fixed_name: str | None) -> dict[str, Any]:
    """The grammar the model answers under.

    Lengths and repeats are bounded: llama.cpp turns the schema into a grammar and refuses one
    that unbounded patterns or long strings blow up, and a bound also stops a small model that
    repeats itself.
    """
    properties: dict[str, Any] = {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9]{0,15}(-[a-z0-9]{1,15}){0,3}$"}
        if fixed_name is None
        else {"const": fixed_name},
        "instructions": {"type": "string", "minLength": 1, "maxLength": _MAX_INSTRUCTIONS},
    }
    if ask_cron:
        properties["cron"] = {"type": "string", "pattern": "^[0-9*/,-]{1,20}( [0-9*/,A-Za-z-]{1,20}){4}$"}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _name(answer: dict[str, Any], description: str) -> str:
    name = str(answer.get("name") or "").strip().lower()
    if _NAME.match(name):
        return name
    # A model that wrote no usable name: the description's first content words stand in.
    words = [w for w in re.findall(r"[a-z0-9]+", description.lower()) if w not in _TIME_WORDS and len(w) > 2]
    return "-".join(words[:3]) or "agent"


def _added(kept: tuple[str, ...], new: list[str]) -> list[str]:
    """``kept``, then what ``new`` adds, in order: an edit takes away nothing it was not asked to."""
    return [*kept, *(n for n in new if n not in kept)]


def _unique(name: str, taken: Collection[str]) -> str:
    """``name``, or ``name-2``, ``name-3``...: compiling never makes a new version of another agent."""
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def _cron(answer: dict[str, Any], timezone: str) -> CronTrigger:
    cron = answer.get("cron")
    if not isinstance(cron, str) or not cron.strip():
        raise _Retry("cron: the description states a schedule; write it as a cron expression")
    try:
        return CronTrigger(cron=cron.strip(), timezone=timezone)
    except ValidationError as exc:
        raise _Retry(_reason(exc)) from exc
