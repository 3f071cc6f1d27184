"""From a sentence to a plan: the model writes it under a JSON-schema grammar, over relevant operations.

The model sees only the operations of the services a full-text search finds for the sentence
(over each service's category, description and operations; everything when nothing matches, as
in a small registry whose descriptions share no word with the user's). The grammar names exactly
those operations with their arguments, so the answer always parses into steps that exist; the
plan is then checked (references, required arguments, what may not be retried) and a refusal
goes back to the model once with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from pydantic import ValidationError

from aigrid.entry.catalog import Catalog, Operation
from aigrid.entry.plan import RULES, STEP_ID, CallStep, ChooseStep, Plan, PlanError, references
from aigrid.kernel.tool_search import search_tools, strong

# Asks the model (tenant, messages, JSON schema of the answer) and returns its answer's text.
WriteFn = Callable[[int, list[dict[str, Any]], dict[str, Any]], Awaitable[str]]

MAX_INPUT_CHARS = 1000
# A plan of six steps is about 200 tokens; a model that rambles to the bound is cut there.
PLAN_MAX_TOKENS = 400
_MAX_STRING = 40
_MAX_ARRAY = 4
_REF = {"type": "string", "pattern": r"^[$][a-z][a-z0-9_]{0,11}[.][a-z_]{1,24}$"}
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
    '{"steps": [...]}. A step either calls an operation, '
    '{"id": "a", "call": "service.operation", "args": {...}}, '
    "or chooses one item among the results of earlier calls, "
    '{"id": "pick", "choose": "cheapest", "from": ["a", "b"], "where": "available", "match": "words"}, '
    "where choose is cheapest, nearest, earliest, best or first, and match holds the words the item "
    'must contain. An argument "$pick.field" is that field of the chosen item, like "$pick.sku" or '
    '"$pick.id". Search every service that may have what is wanted, one step each (they run at the '
    "same time), choose, then call the operation that orders or books the chosen item. Payment is "
    "done for you: never pay. To answer a question, stop after the choice. If the operations "
    'cannot do the request, answer {"steps": []}.\n'
    'Example. Request: buy two of the cheapest Pebble power banks. Plan: {"steps": ['
    '{"id": "a", "call": "shop_a.search", "args": {"query": "pebble power bank"}}, '
    '{"id": "b", "call": "shop_b.search", "args": {"query": "pebble power bank"}}, '
    '{"id": "pick", "choose": "cheapest", "from": ["a", "b"], "where": "available", '
    '"match": "pebble power bank"}, '
    '{"id": "buy", "call": "shop_a.create_order", "args": {"sku": "$pick.sku", "quantity": 2}}]}'
)


class Planner:
    """Writes plans for sentences with the model, over the operations the sentence needs."""

    def __init__(self, write: WriteFn) -> None:
        self._write = write

    async def plan(self, tenant_id: int, user: str, text: str, catalog: Catalog, today: date) -> Plan:
        """A checked plan for ``text``; PlanError if the model writes none that holds."""
        shown = relevant(catalog, text)
        if not shown:
            raise PlanError("no registered service can do anything yet")
        messages = _prompt(user, text, shown, today)
        schema = plan_schema(shown)
        answer = await self._write(tenant_id, messages, schema)
        try:
            return checked(answer, catalog, shown)
        except PlanError as first:
            retry = [
                *messages,
                {"role": "assistant", "content": answer[:800]},
                {"role": "user", "content": f"That plan cannot run: {first}. Write it again, fixed."},
            ]
            return checked(await self._write(tenant_id, retry, schema), catalog, shown)


def relevant(catalog: Catalog, text: str) -> list[Operation]:
    """The operations of the services the sentence is about (every plannable one if none match)."""
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
    return [o for o in plannable if o.service in found] if found else plannable


@dataclass(frozen=True, slots=True)
class _ServiceDocument:
    """A service as the search reads it: its name, and all its words."""

    name: str
    description: str


def _prompt(user: str, text: str, shown: list[Operation], today: date) -> list[dict[str, Any]]:
    lines = [f"Today is {today.isoformat()}. The user is {user}.", f"Request: {text}", "Operations:"]
    for o in shown:
        params = ", ".join(o.parameters.get("properties", {}))
        lines.append(f"- {o.name}({params}): {' '.join(o.tool.description.split())}")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def plan_schema(shown: list[Operation]) -> dict[str, Any]:
    """The grammar the model plans under: a step calls one of ``shown`` or chooses.

    Lengths and repeats are bounded: llama.cpp turns the schema into a grammar and refuses one
    that long strings or unbounded repeats blow up, and a bound also stops a model that repeats.
    """
    step_id = {"type": "string", "pattern": STEP_ID.replace("{0,11}", "{0,7}")}
    calls = [
        {
            "type": "object",
            "properties": {
                "id": step_id,
                "call": {"const": o.name},
                "args": _referable(o.parameters, o.parameters),
            },
            "required": ["id", "call", "args"],
            "additionalProperties": False,
        }
        for o in shown
    ]
    choose = {
        "type": "object",
        "properties": {
            "id": step_id,
            "choose": {"enum": list(RULES)},
            "from": {"type": "array", "items": step_id, "minItems": 1, "maxItems": _MAX_ARRAY},
            "where": {"enum": ["available", "any"]},
            "match": {"type": "string", "maxLength": 40},
        },
        "required": ["id", "choose", "from", "where", "match"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"steps": {"type": "array", "items": {"anyOf": [*calls, choose]}, "maxItems": 6}},
        "required": ["steps"],
        "additionalProperties": False,
    }


def _referable(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    """``schema`` bounded for a grammar, with each scalar also allowed to be a ``$step.field``."""
    if not isinstance(schema, dict):
        return {"type": "string", "maxLength": _MAX_STRING}
    if "$ref" in schema:  # "#/$defs/Name", as pydantic writes nested models
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return _referable(root.get("$defs", {}).get(name), root)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {
            "type": "object",
            "properties": {k: _referable(v, root) for k, v in properties.items()},
            "required": [r for r in schema.get("required", []) if r in properties],
            "additionalProperties": False,
        }
    if kind == "array":
        return {
            "type": "array",
            "items": _referable(schema.get("items"), root),
            "minItems": min(int(schema.get("minItems", 0)), _MAX_ARRAY),
            "maxItems": _MAX_ARRAY,
        }
    if kind in ("integer", "number", "boolean"):
        return {"anyOf": [{"type": kind}, _REF]}
    if "enum" in schema:
        return {"enum": list(schema["enum"])}
    return {"type": "string", "maxLength": _MAX_STRING}


def checked(answer: str, catalog: Catalog, shown: list[Operation] | None = None) -> Plan:
    """The plan in ``answer``, if it parses and every step can run; PlanError says why not."""
    try:
        raw = orjson.loads(answer)
    except orjson.JSONDecodeError as exc:
        raise PlanError(f"the plan is not JSON: {exc}") from exc
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
