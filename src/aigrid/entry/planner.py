"""From a sentence to a plan: the model writes it under a JSON-schema grammar, over relevant operations.

The model sees only the operations of the services a full-text search finds for the sentence
(over each service's category, description and operations; everything when nothing matches, as
in a small registry whose descriptions share no word with the user's), and the operations of the
services its worked examples used. Worked examples are plans that ran and were verified for
similar sentences (the experience memory hands them in through ``Recall``); without any, one
built-in example shows the form.

The model writes its steps numbered, ``{"steps": {"1": ..., "2": ...}}``, and refers to an earlier
step by its number (``$3.sku``). The grammar gives each number its own rule, in which a reference
or a choice may name only smaller numbers: a plan whose steps share an id or refer to a later step
cannot be written at all. The answer is then turned into the plan's own form (ids ``s1``, ``s2``,
...) and checked (required arguments, what may not be retried); ``Planner.plan`` sends a refused
plan back to the model with the reason (see ``Planner``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
from pydantic import ValidationError

from aigrid.entry.catalog import Catalog, Operation
from aigrid.entry.grounding import MAX_STRING, Said, said_in, unkept
from aigrid.entry.mending import mended, ordered, rated, relaxed
from aigrid.entry.plan import RULES, CallStep, ChooseStep, Plan, PlanError, PlanFault, map_strings, references
from aigrid.entry.reading import Reading
from aigrid.kernel.tool_search import search_tools, strong

# Asks the model (tenant, messages, JSON schema of the answer) and returns its answer's text.
WriteFn = Callable[[int, list[dict[str, Any]], dict[str, Any]], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class PlanExample:
    """A worked example: a sentence and the plan (in the plan's own form) that did it right."""

    text: str
    plan: dict[str, Any]


# The worked examples for a tenant's sentence, nearest first (the experience memory's lookup).
Recall = Callable[[int, str], Awaitable[list[PlanExample]]]
# Runs a plan's read-only steps before anyone is asked to confirm: what it found and would buy.
Rehearse = Callable[[Plan], Awaitable[Reading]]

MAX_INPUT_CHARS = 1000
# A plan of six steps is about 200 tokens; a model that rambles to the bound is cut there.
PLAN_MAX_TOKENS = 400
# How a refused plan goes back to the model, and one that runs but does not do what was asked.
RETRY_PREFIX = "That plan cannot run:"
UNKEPT_PREFIX = "That plan does not do what was asked:"
REPAIR_PREFIXES = (RETRY_PREFIX, UNKEPT_PREFIX)
# How many plans are drawn at once when the first does not hold, and at what temperature.
REDRAWS = 4
REDRAW_TEMPERATURE = 0.8
# The most steps the model may write; numbered 1 to 8, so a reference is one digit.
WRITTEN_STEPS = 8
# Words for a string argument: anything of at most 40 characters but what would read as a reference
# (a leading "$"), and no quote or backslash, so no escape sequence can smuggle one in.
_TEXT = {"type": "string", "pattern": f'^([^$"\\\\][^"\\\\]{{0,{MAX_STRING - 1}}})?$'}
_MAX_ARRAY = 4
_MAX_EXAMPLES = 3
_WRITTEN_REF = re.compile(r"^\$([1-9])\.([A-Za-z_][A-Za-z0-9_]{0,31})$")
_PLAN_REF = re.compile(r"^\$([a-z][a-z0-9_]{0,11})\.([A-Za-z_][A-Za-z0-9_]{0,31})$")
# Words people say for what services do, so "buy" finds the shop that "orders" and "fly" the
# agency with "flights": the search is over the services' own words.
_SAYINGS = {
    "buy": "order shop product",
    "purchase": "order shop product",
    "get": "order",
    "fly": "flight",
    "flights": "flight",
    "ticket": "flight",
    "stay": "hotel",
    "room": "hotel",
    "night": "hotel",
    "nights": "hotel",
    "eat": "food restaurant",
    "hungry": "food restaurant",
    "lunch": "food restaurant",
    "dinner": "food restaurant",
    "deliver": "food delivery",
    "delivered": "food delivery",
    "money": "balance wallet",
    "afford": "balance wallet",
}
# How to choose says nothing about where to look ("cheapest" is in every price list's description).
_CHOICE_WORDS = frozenset(["cheapest", "cheaper", "cheap", "nearest", "closest", "earliest", "best", "first"])
_SYSTEM = (
    "You plan how to carry out a user's request with the operations listed. Answer with JSON only: "
    '{"steps": {"1": step, "2": step, ...}}, the steps numbered in order. A step either calls an '
    'operation, {"call": "service.operation", "args": {...}}, or chooses one item among what earlier '
    'steps found, {"choose": "cheapest", "from": [1, 2], "where": "available", "match": "words"}, '
    "where choose is cheapest, nearest, earliest, best or first, and match holds the words the item "
    'must contain. An argument "$3.sku" is the field sku of what step 3 chose, like "$3.id". '
    "Search every service that may have what is wanted, one step each (they run at the same time), "
    "choose, then call the operation that orders or books the chosen item. Payment is done for you: "
    "never pay. To answer a question, stop after the choice. If the operations cannot do the "
    'request, answer {"steps": {}}.'
)
# Shows the form when the experience memory has nothing closer; its services are made up.
_BUILT_IN = PlanExample(
    "buy two of the cheapest Pebble power banks",
    {
        "steps": [
            {"id": "a", "call": "shop_a.search", "args": {"query": "pebble power bank"}},
            {"id": "b", "call": "shop_b.search", "args": {"query": "pebble power bank"}},
            {
                "id": "pick",
                "choose": "cheapest",
                "from": ["a", "b"],
                "where": "available",
                "match": "pebble power bank",
            },
            {"id": "buy", "call": "shop_a.create_order", "args": {"sku": "$pick.sku", "quantity": 2}},
        ]
    },
)


@dataclass(frozen=True, slots=True)
class Planned:
    """A checked plan and how it was written: the last prompt, the model's answer to it, and what its
    read-only steps found where the planner rehearsed it."""

    plan: Plan
    messages: list[dict[str, Any]]
    answer: str
    reading: Reading | None = None


class TurnedDown(PlanError):
    """A checked plan whose read-only steps the world turned down (nothing matches, sold out)."""

    def __init__(self, planned: Planned, why: PlanError) -> None:
        super().__init__(str(why))
        self.planned = planned


@dataclass(frozen=True, slots=True)
class Prompted:
    """What a plan is asked with: the conversation, the answer's JSON schema, the operations shown,
    and the worked examples in it."""

    messages: list[dict[str, Any]]
    schema: dict[str, Any]
    shown: list[Operation]
    examples: list[PlanExample]


class Planner:
    """Writes plans for sentences with the model, over the operations the sentence needs.

    Given ``rehearse`` (the plan's read-only steps, run before anyone is asked to confirm), a plan is
    judged before it is taken: it must check, its reading must not fail for a fault of its own (a
    field its step's result lacks), and it must keep to the request (``unkept``). One that does not
    is followed, with ``redraw`` (the model at a temperature), by ``REDRAWS`` plans drawn at once
    from the same prompt, else by one answer to the refusal sent back; the first of those that holds
    is taken. A small model copies its example whatever it is told, and sampling finds the plan it
    can write that keeps to the request. A plan that keeps to the request and that the world turns
    down (nothing matches, sold out) is the answer: asked again, the model would only look for
    something else to buy. When none holds, the first answer stands, as it is.
    """

    def __init__(self, write: WriteFn, recall: Recall | None = None, redraw: WriteFn | None = None) -> None:
        self._write = write
        self._recall = recall
        self._redraw = redraw

    async def prepare(self, tenant_id: int, user: str, text: str, catalog: Catalog, today: date) -> Prompted:
        """What the model is asked for ``text``: the conversation, the answer's schema, the operations."""
        found = await self._recall(tenant_id, text) if self._recall is not None else []
        examples = usable_examples(found, catalog)
        shown = relevant(catalog, text, examples)
        if not shown:
            raise PlanError("no registered service can do anything yet")
        schema = plan_schema(shown, said_in(text, examples))
        return Prompted(prompt(user, text, shown, today, examples), schema, shown, examples)

    async def plan(
        self,
        tenant_id: int,
        user: str,
        text: str,
        catalog: Catalog,
        today: date,
        rehearse: Rehearse | None = None,
    ) -> Planned:
        """A checked plan for ``text`` (rehearsed, with ``rehearse``); PlanError if the model writes none
        that holds."""
        asked = await self.prepare(tenant_id, user, text, catalog, today)
        judge = _Trial(text, catalog, asked, rehearse)
        first = await judge(asked.messages, await self._write(tenant_id, asked.messages, asked.schema))
        if first.holds or (first.turned_down and not first.problems):
            return first.taken()
        if self._redraw is not None and rehearse is not None:
            drawn = await asyncio.gather(
                *(self._redraw(tenant_id, asked.messages, asked.schema) for _ in range(REDRAWS))
            )
            tries = [await judge(asked.messages, a) for a in dict.fromkeys(drawn) if a != first.answer]
        else:
            why = "; ".join([*([str(first.error)] if first.error else []), *first.problems])
            prefix = RETRY_PREFIX if first.error else UNKEPT_PREFIX
            messages = _repaired(asked.messages, first.answer, f"{prefix} {why}")
            tries = [await judge(messages, await self._write(tenant_id, messages, asked.schema))]
        # A drawn plan replaces the first only when it holds: one that runs but does not keep to the
        # request (2 noodle soups for "three") would be offered for the user to buy.
        return next((t for t in tries if t.holds), first).taken()


@dataclass(slots=True)
class _Tried:
    """One answer judged: the plan it holds, what it leaves out of the request, or why it fails."""

    messages: list[dict[str, Any]]
    answer: str
    planned: Planned | None = None
    problems: list[str] = field(default_factory=list)
    error: PlanError | None = None
    plan: Plan | None = None

    @property
    def holds(self) -> bool:
        """It ran and keeps to the request."""
        return self.planned is not None and not self.problems

    @property
    def turned_down(self) -> bool:
        """It checks, and the world said no (not a fault of its own)."""
        return self.plan is not None and self.error is not None and not isinstance(self.error, PlanFault)

    def taken(self) -> Planned:
        """The plan, or the refusal raised (TurnedDown when the world said no)."""
        if self.planned is not None:
            return self.planned
        assert self.error is not None
        if self.turned_down and self.plan is not None:
            raise TurnedDown(Planned(self.plan, self.messages, self.answer), self.error) from self.error
        raise self.error


@dataclass(frozen=True, slots=True)
class _Trial:
    """Judges an answer as the planner takes plans: checked, kept to the request, rehearsed."""

    text: str
    catalog: Catalog
    asked: Prompted
    rehearse: Rehearse | None

    async def __call__(self, messages: list[dict[str, Any]], answer: str) -> _Tried:
        tried = _Tried(messages, answer)
        rehearse = self.rehearse
        try:
            written = checked_written(answer, self.catalog, self.asked.shown)
            tried.plan = written
            reading = None
            if rehearse is not None:
                if written.steps:
                    tried.plan = mended(self.text, written, self.catalog, self.asked.examples)
                tried.problems = self._unkept(tried.plan)
                if tried.plan.steps:
                    reading = await self._read(tried)
                    read = tried.plan
                    tried.plan = ordered(self.text, rated(self.text, read, reading), reading, self.catalog)
                    tried.problems = self._unkept(tried.plan)
                    if tried.plan is not read:
                        reading = await rehearse(tried.plan)
        except PlanError as exc:
            tried.error = exc
            return tried
        shown = answer if tried.plan is written else canonical(tried.plan)
        tried.planned = Planned(tried.plan, messages, shown, reading)
        return tried

    def _unkept(self, plan: Plan) -> list[str]:
        return unkept(self.text, plan, self.catalog, self.asked.examples)

    async def _read(self, tried: _Tried) -> Reading:
        """The plan's reading; where its searches found nothing, that of the plan searching in
        plainer words if it finds something (the tried plan becomes that one)."""
        assert self.rehearse is not None and tried.plan is not None
        try:
            return await self.rehearse(tried.plan)
        except PlanError as exc:
            if isinstance(exc, PlanFault) or "nothing" not in str(exc):
                raise
            for shorter in relaxed(tried.plan):
                try:
                    reading = await self.rehearse(shorter)
                except PlanError:
                    continue
                tried.plan = shorter
                return reading
            raise


def _repaired(messages: list[dict[str, Any]], answer: str, why: str) -> list[dict[str, Any]]:
    """The conversation that sends ``answer`` back with ``why``."""
    return [
        *messages,
        {"role": "assistant", "content": answer[:800]},
        {"role": "user", "content": f"{why}. Write it again, fixed."},
    ]


def usable_examples(found: list[PlanExample], catalog: Catalog) -> list[PlanExample]:
    """The nearest few examples whose every call the catalog can still make."""
    plannable = {o.name for o in catalog.plannable()}
    usable = [e for e in found if set(plan_calls(e.plan)) <= plannable and plan_calls(e.plan)]
    return usable[:_MAX_EXAMPLES]


def plan_calls(plan: dict[str, Any]) -> list[str]:
    """The operations a plan (in its own form) calls, in order."""
    steps = plan.get("steps")
    if not isinstance(steps, list):
        return []
    return [str(s["call"]) for s in steps if isinstance(s, dict) and "call" in s]


def relevant(catalog: Catalog, text: str, examples: list[PlanExample] | None = None) -> list[Operation]:
    """The operations of the services the sentence is about (every plannable one if none match).

    The services the worked examples used are about it too: the examples were picked for meaning,
    which a search of the words alone can miss.
    """
    plannable = catalog.plannable()
    services = sorted({o.service for o in plannable})
    documents: list[_ServiceDocument] = []
    for service in services:
        own = [o for o in plannable if o.service == service]
        about = [own[0].category, catalog.descriptions.get(service, "")]
        about += [f"{o.op.replace('_', ' ')} {o.tool.description}" for o in own]
        documents.append(_ServiceDocument(service, " ".join(about)))
    said = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _CHOICE_WORDS]
    words = " ".join(said + [_SAYINGS.get(w, "") for w in said])
    found = {f.tool.name for f in strong(search_tools(documents, words, limit=len(documents)))}
    found |= {call.split(".")[0] for e in examples or [] for call in plan_calls(e.plan)}
    return [o for o in plannable if o.service in found] if found else plannable


@dataclass(frozen=True, slots=True)
class _ServiceDocument:
    """A service as the search reads it: its name, and all its words."""

    name: str
    description: str


def prompt(
    user: str, text: str, shown: list[Operation], today: date, examples: list[PlanExample]
) -> list[dict[str, Any]]:
    """The conversation the model plans in: the form and the operations, worked examples as earlier
    turns (the built-in one when there are none; the nearest last, next to the request, where a
    small model heeds it most), then the request."""
    lines = [_SYSTEM, f"Today is {today.isoformat()}. The user is {user}.", "Operations:"]
    for o in shown:
        params = ", ".join(o.parameters.get("properties", {}))
        lines.append(f"- {o.name}({params}): {' '.join(o.tool.description.split())}")
    messages: list[dict[str, Any]] = [{"role": "system", "content": "\n".join(lines)}]
    for example in reversed(examples or [_BUILT_IN]):
        messages.append({"role": "user", "content": f"Request: {example.text}"})
        messages.append({"role": "assistant", "content": orjson.dumps(to_written(example.plan)).decode()})
    messages.append({"role": "user", "content": f"Request: {text}"})
    return messages


def plan_schema(shown: list[Operation], said: Said | None = None) -> dict[str, Any]:
    """The grammar the model plans under: numbered steps, each calling one of ``shown`` or choosing.

    Step N has a rule of its own, in which references (``$M.field``) and choices (``from``) name
    only steps M < N, so no answer reuses a step's number or refers forward. The arguments that
    ``said`` names are written in the request's own phrases (or as references). Lengths and repeats
    are bounded: llama.cpp turns the schema into a grammar and refuses one that long strings or
    unbounded repeats blow up, and a bound also stops a model that repeats.
    """
    copied = said.arguments if said is not None and said.phrases else frozenset()
    numbered: dict[str, Any] = {}
    for n in range(1, WRITTEN_STEPS + 1):
        ref = {"$ref": f"#/$defs/ref{n}"} if n > 1 else None
        text = {"$ref": f"#/$defs/text{n}"} if n > 1 else {"$ref": "#/$defs/text"}
        words = {"$ref": f"#/$defs/said{n}"} if n > 1 else {"$ref": "#/$defs/said"}
        strings = Strings(text, words if copied else text, copied)
        steps: list[dict[str, Any]] = [
            {
                "type": "object",
                "properties": {
                    "call": {"const": o.name},
                    "args": _referable(o.parameters, o.parameters, ref, strings),
                },
                "required": ["call", "args"],
                "additionalProperties": False,
            }
            for o in shown
        ]
        if n > 1:
            earlier = {"enum": list(range(1, n))}
            steps.append(
                {
                    "type": "object",
                    "properties": {
                        "choose": {"enum": list(RULES)},
                        "from": {"type": "array", "items": earlier, "minItems": 1, "maxItems": _MAX_ARRAY},
                        "where": {"enum": ["available", "any"]},
                        "match": {"anyOf": [{"$ref": "#/$defs/said"}, {"const": ""}]}
                        if "match" in copied
                        else {"type": "string", "maxLength": MAX_STRING},
                    },
                    "required": ["choose", "from", "where", "match"],
                    "additionalProperties": False,
                }
            )
        numbered[str(n)] = steps[0] if len(steps) == 1 else {"anyOf": steps}
    # Shared rules: each step number's reference, and words or a reference, written once.
    defs: dict[str, Any] = {"text": _TEXT}
    if copied and said is not None:
        defs["said"] = {"enum": list(said.phrases)}
    for n in range(2, WRITTEN_STEPS + 1):
        defs[f"ref{n}"] = {"type": "string", "pattern": f"^[$][1-{n - 1}][.][a-z_]{{1,24}}$"}
        defs[f"text{n}"] = {"anyOf": [{"$ref": f"#/$defs/ref{n}"}, {"$ref": "#/$defs/text"}]}
        if copied:
            defs[f"said{n}"] = {"anyOf": [{"$ref": f"#/$defs/ref{n}"}, {"$ref": "#/$defs/said"}]}
    return {
        "type": "object",
        "properties": {"steps": {"type": "object", "properties": numbered, "additionalProperties": False}},
        "required": ["steps"],
        "additionalProperties": False,
        "$defs": defs,
    }


@dataclass(frozen=True, slots=True)
class Strings:
    """The rules for a step's string arguments: free ``text``, or ``said`` (the request's phrases) for
    the arguments ``copied`` names; either may also be a reference where the step has one."""

    text: dict[str, Any]
    said: dict[str, Any]
    copied: frozenset[str]


def _referable(
    schema: Any, root: dict[str, Any], ref: dict[str, Any] | None, strings: Strings, name: str = ""
) -> dict[str, Any]:
    """``schema`` bounded for a grammar, each scalar also allowed to be ``ref`` (a reference); a
    string argument is ``strings``' rule for its ``name``."""
    text = strings.said if name in strings.copied else strings.text
    if not isinstance(schema, dict):
        return text
    if "$ref" in schema:  # "#/$defs/Name", as pydantic writes nested models
        target = str(schema["$ref"]).rsplit("/", 1)[-1]
        return _referable(root.get("$defs", {}).get(target), root, ref, strings, name)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {
            "type": "object",
            "properties": {k: _referable(v, root, ref, strings, k) for k, v in properties.items()},
            "required": [r for r in schema.get("required", []) if r in properties],
            "additionalProperties": False,
        }
    if kind == "array":
        return {
            "type": "array",
            "items": _referable(schema.get("items"), root, ref, strings),
            "minItems": min(int(schema.get("minItems", 0)), _MAX_ARRAY),
            "maxItems": _MAX_ARRAY,
        }
    if kind in ("integer", "number", "boolean"):
        return {"anyOf": [{"type": kind}, ref]} if ref is not None else {"type": kind}
    if "enum" in schema:
        return {"enum": list(schema["enum"])}
    return text


def to_written(plan: dict[str, Any]) -> dict[str, Any]:
    """A plan in its own form (ids, ``$id.field``) as the model writes it: numbered, ``$N.field``."""
    steps = [s for s in plan.get("steps", []) if isinstance(s, dict)]
    number = {str(s.get("id")): str(n) for n, s in enumerate(steps, 1)}

    def renumbered(text: str) -> str:
        found = _PLAN_REF.match(text)
        return f"${number[found[1]]}.{found[2]}" if found and found[1] in number else text

    written: dict[str, Any] = {}
    for n, step in enumerate(steps, 1):
        if "choose" in step:
            written[str(n)] = {
                "choose": step["choose"],
                "from": [int(number[str(f)]) for f in step.get("from", []) if str(f) in number],
                "where": step.get("where", "available"),
                "match": step.get("match", ""),
            }
        else:
            written[str(n)] = {
                "call": step.get("call"),
                "args": map_strings(step.get("args", {}), renumbered),
            }
    return {"steps": written}


def from_written(raw: Any) -> dict[str, Any]:
    """What the model wrote (numbered steps, ``$N.field``) in the plan's own form (``s1``, ``$s1.field``)."""
    steps = raw.get("steps") if isinstance(raw, dict) else None
    if not isinstance(steps, dict):
        raise PlanError('the plan is not {"steps": {"1": ..., "2": ...}}')

    def renamed(text: str) -> str:
        found = _WRITTEN_REF.match(text)
        return f"$s{found[1]}.{found[2]}" if found else text

    converted: list[dict[str, Any]] = []
    for number, step in steps.items():
        if not isinstance(step, dict):
            raise PlanError(f"step {number} is not an object")
        own = {"id": f"s{number}", **{k: v for k, v in step.items() if k not in ("id", "from", "args")}}
        if "from" in step:
            own["from"] = [f"s{f}" for f in step["from"]] if isinstance(step["from"], list) else step["from"]
        if "args" in step:
            own["args"] = map_strings(step["args"], renamed)
        converted.append(own)
    return {"steps": converted}


def canonical(plan: Plan) -> str:
    """A plan in the written form the planner asks for, as compact JSON."""
    return orjson.dumps(
        to_written(plan.model_dump(mode="json", by_alias=True, exclude_defaults=True))
    ).decode()


def checked_written(answer: str, catalog: Catalog, shown: list[Operation] | None = None) -> Plan:
    """The plan the model wrote in ``answer``, if it parses and every step can run."""
    try:
        raw = orjson.loads(answer)
    except orjson.JSONDecodeError as exc:
        raise PlanError(f"the plan is not JSON: {exc}") from exc
    return validated(from_written(raw), catalog, shown)


def checked(answer: str, catalog: Catalog, shown: list[Operation] | None = None) -> Plan:
    """The plan in ``answer`` (in the plan's own form), if it parses and every step can run."""
    try:
        raw = orjson.loads(answer)
    except orjson.JSONDecodeError as exc:
        raise PlanError(f"the plan is not JSON: {exc}") from exc
    return validated(raw, catalog, shown)


def validated(raw: Any, catalog: Catalog, shown: list[Operation] | None = None) -> Plan:
    """``raw`` as a plan whose every step can run; PlanError says why not."""
    if isinstance(raw, dict) and raw.get("steps") == []:
        return Plan.model_construct(steps=[])
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise PlanError(f"{where}: {message}" if where else message) from exc
    allowed = {o.name for o in shown} if shown is not None else {o.name for o in catalog.plannable()}
    kinds: dict[str, Any] = {step.id: step for step in plan.steps}
    for step in plan.steps:
        if isinstance(step, ChooseStep):
            bad = [s for s in step.from_ if not isinstance(kinds[s], CallStep)]
            if bad:
                raise PlanError(f"step '{step.id}' chooses from {', '.join(bad)}, which are not calls")
            continue
        operation = catalog.get(step.call)
        if operation is None or step.call not in allowed:
            raise PlanError(f"step '{step.id}' calls '{step.call}', which is not one of the operations")
        undo = catalog.get(f"{operation.service}.{operation.undo}") if operation.undo else None
        if operation.changes_world and not (operation.idempotent and (undo is None or undo.idempotent)):
            raise PlanError(
                f"{step.call} changes the world but it (or its undo) takes no idempotency key, so a "
                "retry could do it twice; it cannot be part of a plan"
            )
        _check_args(step, operation, catalog, kinds)
    return plan


def _check_args(step: CallStep, operation: Operation, catalog: Catalog, kinds: dict[str, Any]) -> None:
    properties = operation.parameters.get("properties", {})
    unknown = sorted(set(step.args) - set(properties))
    if unknown:
        raise PlanError(
            f"step '{step.id}' gives {operation.name} arguments it does not take: {', '.join(unknown)}"
        )
    missing = [r for r in operation.parameters.get("required", []) if r not in step.args]
    if missing:
        raise PlanError(f"step '{step.id}' lacks the arguments {operation.name} needs: {', '.join(missing)}")
    for ref, _ in references(step.args):
        target = kinds[ref]
        used = catalog.get(target.call) if isinstance(target, CallStep) else None
        if used is not None and used.changes_world:
            raise PlanError(f"step '{step.id}' uses the result of '{ref}', which is known only after paying")
