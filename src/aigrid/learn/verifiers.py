"""Verifiers: code that judges an outcome, one per task kind, so nothing learns from a guess.

* The entry's: a plan must check (the planner's own checks), then what it would buy must be what
  the task's intent comes to (seller, item, quantity, nights, dishes), and a task that must buy
  nothing must buy nothing (no purchase, or one the wallet cannot pay, which the saga refuses).
* The compiler's: the spec must validate again (as data and as the YAML shown), grant only known
  tools, and have the tools and trigger a case states; a case that should make no agent must be
  refused with a clear error.
* Tool calls': the call names the expected tool, its arguments validate against the tool's JSON
  schema and carry the values the request stated; a call made in a process also needs an answer
  that is not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema
import orjson
import yaml

from aigrid.entry.reading import Purchase
from aigrid.kernel.compiler import Draft
from aigrid.spec import AgentSpec, CronTrigger, IntervalTrigger, OnceTrigger

# The entry suite's metrics: every task counts in "all" and in one of the other two.
BUY_OR_BOOK = "buy_or_book"
MUST_BUY_NOTHING = "must_buy_nothing"
ALL = "all"
ENTRY_METRICS = (BUY_OR_BOOK, MUST_BUY_NOTHING, ALL)
_BUYING_KINDS = frozenset({"purchase", "booking", "food"})
COMPILER_METRICS = ("right_tools", "right_trigger", "valid", ALL)
TOOL_METRICS = ("right_tool", "valid_arguments", ALL)
# Where an order's item id is, by operation argument: a shop's sku, a booking's item, a restaurant.
_ITEM_ARGS = ("sku", "item_id", "restaurant_id", "id")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a verifier said: passed or not, per metric, and why in words."""

    passed: bool
    checks: dict[str, bool]
    reason: str


def must_buy_nothing(task: dict[str, Any]) -> bool:
    """Whether a task of the entry suite must end with nothing bought."""
    return str(task.get("kind")) not in _BUYING_KINDS


def _entry_checks(task: dict[str, Any], passed: bool) -> dict[str, bool]:
    return {MUST_BUY_NOTHING if must_buy_nothing(task) else BUY_OR_BOOK: passed, ALL: passed}


def entry_verdict(
    task: dict[str, Any], purchases: list[Purchase] | None, refusal: str | None, available_cents: int | None
) -> Verdict:
    """Judge an entry task from what its plan would buy.

    ``purchases`` is None when the plan was refused or its reading failed (``refusal`` says why);
    ``available_cents`` is the payer's balance less holds, when the wallet told it.
    """
    total = sum(p.amount_cents or 0 for p in purchases or [])
    affordable = available_cents is None or total <= available_cents
    if must_buy_nothing(task):
        if not purchases:
            why = refusal or "the plan buys nothing"
            return Verdict(True, _entry_checks(task, True), f"bought nothing: {why}")
        if not affordable:
            why = f"the wallet refuses {total} cents (it has {available_cents})"
            return Verdict(True, _entry_checks(task, True), f"bought nothing: {why}")
        bought = ", ".join(f"{p.count} x {p.item} from {p.seller}" for p in purchases)
        return Verdict(False, _entry_checks(task, False), f"would buy {bought}; it must buy nothing")
    if purchases is None:
        return Verdict(False, _entry_checks(task, False), f"no plan that runs: {refusal}")
    if not purchases:
        return Verdict(False, _entry_checks(task, False), "the plan buys nothing")
    expected = list(task.get("expect") or [])
    problem = _purchases_problem(purchases, expected)
    if problem is None and not affordable:
        problem = f"the wallet would refuse {total} cents (it has {available_cents})"
    if problem is not None:
        return Verdict(False, _entry_checks(task, False), problem)
    return Verdict(True, _entry_checks(task, True), "buys what was asked")


def _purchases_problem(purchases: list[Purchase], expected: list[dict[str, Any]]) -> str | None:
    """Why the purchases are not the expected ones (as a multiset), or None when they are."""
    left = list(expected)
    for purchase in purchases:
        match = next((e for e in left if purchase_matches(purchase, e)), None)
        if match is None:
            want = "; ".join(_expected_text(e) for e in left) or "nothing more"
            return f"would buy {_purchase_text(purchase)}, want {want}"
        left.remove(match)
    if left:
        return "does not buy " + "; ".join(_expected_text(e) for e in left)
    return None


def purchase_matches(purchase: Purchase, expected: dict[str, Any]) -> bool:
    """Whether a purchase is the expected one: seller, item, quantity, nights and dishes."""
    if purchase.seller != expected.get("service"):
        return False
    args = purchase.args
    if next((str(args[k]) for k in _ITEM_ARGS if k in args), None) != str(expected.get("item")):
        return False
    if "items" in expected:
        wanted = sorted((str(i["item"]).lower(), int(i["quantity"])) for i in expected["items"])
        given = args.get("items")
        got = (
            sorted(
                (str(i.get("item")).lower(), int(i.get("quantity") or 1))
                for i in given
                if isinstance(i, dict)
            )
            if isinstance(given, list)
            else []
        )
        return got == wanted
    nights = expected.get("nights")
    if nights is not None and args.get("nights") != nights:
        return False
    quantity = int(expected.get("quantity") or 1)
    return int(args.get("quantity") or 1) == quantity


def _purchase_text(p: Purchase) -> str:
    return f"{p.count} x {p.item} from {p.seller}"


def _expected_text(e: dict[str, Any]) -> str:
    nights = f", {e['nights']} night(s)" if e.get("nights") else ""
    return f"{e.get('quantity', 1)} x {e.get('item')} from {e.get('service')}{nights}"


# -- the compiler ------------------------------------------------------------------------------------


def trigger_of(spec: AgentSpec) -> dict[str, Any] | None:
    """The spec's timed trigger in the suite's form; the compiler makes at most one."""
    for trigger in spec.triggers:
        if isinstance(trigger, CronTrigger):
            return {"kind": "cron", "cron": trigger.cron, "timezone": trigger.timezone}
        if isinstance(trigger, IntervalTrigger):
            return {"kind": "interval", "every_s": trigger.every_s}
        if isinstance(trigger, OnceTrigger):
            return {"kind": "once", "at": trigger.at.isoformat()}
    return None


def same_trigger(got: dict[str, Any] | None, want: dict[str, Any] | None, timezone: str) -> bool:
    """Whether two triggers fire alike (a cron in the owner's zone; a once at the same instant)."""
    if got is None or want is None:
        return got is want
    if got["kind"] != want["kind"]:
        return False
    if want["kind"] == "cron":
        return bool(got["cron"] == want["cron"] and got["timezone"] == timezone)
    if want["kind"] == "interval":
        return bool(got["every_s"] == want["every_s"])
    return datetime.fromisoformat(got["at"]) == datetime.fromisoformat(want["at"])


def shown_trigger(trigger: dict[str, Any] | None) -> str:
    """A trigger in a few words."""
    if trigger is None:
        return "none"
    if trigger["kind"] == "cron":
        return f"cron '{trigger['cron']}'"
    if trigger["kind"] == "interval":
        return f"every {trigger['every_s']}s"
    return f"once {trigger['at']}"


def broken_spec(draft: Draft, names: set[str]) -> str | None:
    """Why a draft is not a valid spec, or None: it must validate again, as text and as data."""
    try:
        again = AgentSpec.model_validate(draft.spec.model_dump(mode="json"))
        from_text = AgentSpec.model_validate(yaml.safe_load(draft.text))
    except Exception as exc:  # any failure is the finding
        return f"does not validate again: {exc}"
    if again != draft.spec or from_text != draft.spec:
        return "the spec changes when validated again"
    unknown = set(draft.spec.tools) - names
    if unknown:
        return f"grants unknown tools: {sorted(unknown)}"
    if not set(draft.spec.approval) <= set(draft.spec.tools):
        return "asks approval for tools it does not grant"
    return None


def compiler_verdict(
    case: dict[str, Any], draft: Draft | None, refusal: str | None, names: set[str]
) -> Verdict:
    """Judge a compile: ``draft`` is None when the compiler refused (``refusal`` says why)."""
    timezone = str(case.get("timezone") or "UTC")
    if case.get("error"):
        passed = draft is None and bool(refusal)
        checks = {"valid": passed, ALL: passed}
        if passed:
            return Verdict(True, checks, f"refused: {refusal}")
        made = "" if draft is None else f"made agent '{draft.spec.name}'"
        return Verdict(False, checks, made or "no clear error")
    if draft is None:
        return Verdict(False, dict.fromkeys(COMPILER_METRICS, False), f"refused: {refusal}")
    problem = broken_spec(draft, names)
    if problem is not None:
        return Verdict(False, dict.fromkeys(COMPILER_METRICS, False), f"broken: {problem}")
    got_trigger, want_trigger = trigger_of(draft.spec), case.get("trigger")
    trigger_ok = same_trigger(got_trigger, want_trigger, timezone)
    got_tools, want_tools = set(draft.spec.tools), set(case.get("tools") or [])
    tools_ok = got_tools == want_tools
    differences = []
    if not trigger_ok:
        differences.append(f"trigger {shown_trigger(got_trigger)}, want {shown_trigger(want_trigger)}")
    if not tools_ok:
        parts = [f"-{n}" for n in sorted(want_tools - got_tools)] + [
            f"+{n}" for n in sorted(got_tools - want_tools)
        ]
        differences.append("tools " + " ".join(parts))
    checks = {
        "right_tools": tools_ok,
        "right_trigger": trigger_ok,
        "valid": True,
        ALL: tools_ok and trigger_ok,
    }
    return Verdict(checks[ALL], checks, "; ".join(differences) or "right tools and trigger")


# -- tool calls ---------------------------------------------------------------------------------------


def written_arguments(function: dict[str, Any]) -> Any:
    """A tool call's arguments as the model wrote them: the JSON they hold (none written is ``{}``), or
    their text when it is not JSON."""
    raw = function.get("arguments") or "{}"
    try:
        return orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        return raw


def arguments_problem(arguments: Any, schema: dict[str, Any]) -> str | None:
    """Why ``arguments`` do not validate against a tool's JSON schema, or None."""
    try:
        jsonschema.validate(arguments, schema)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path)
        return f"{where}: {exc.message}" if where else exc.message
    except jsonschema.SchemaError as exc:
        return f"the tool's own schema is invalid: {exc.message}"
    return None


def tool_call_verdict(
    task: dict[str, Any], call: dict[str, Any] | None, schemas: dict[str, dict[str, Any]]
) -> Verdict:
    """Judge one tool call the model made for ``task`` (None: it made none)."""
    want = task["expect"]
    if call is None:
        return Verdict(False, dict.fromkeys(TOOL_METRICS, False), f"no tool call; want {want['name']}")
    name, arguments = str(call.get("name")), call.get("arguments")
    right_tool = name == want["name"]
    problem = arguments_problem(arguments, schemas.get(name, {})) if right_tool else None
    if right_tool and problem is None:
        problem = _stated_values_problem(arguments, want.get("arguments") or {})
    valid = right_tool and problem is None
    checks = {"right_tool": right_tool, "valid_arguments": valid, ALL: valid}
    if not right_tool:
        return Verdict(False, checks, f"called {name}, want {want['name']}")
    return Verdict(valid, checks, problem or "right tool and arguments")


def _stated_values_problem(arguments: Any, wanted: dict[str, Any]) -> str | None:
    if not isinstance(arguments, dict):
        return "the arguments are not an object"
    for key, value in wanted.items():
        got = arguments.get(key)
        if isinstance(value, str):
            if not isinstance(got, str) or value.lower() not in got.lower():
                return f"{key} is {got!r}, want {value!r}"
        elif got != value:
            return f"{key} is {got!r}, want {value!r}"
    return None


def journaled_call_problem(
    arguments: Any, schema: dict[str, Any] | None, result: Any, ok: bool
) -> str | None:
    """Why a tool call a process made is not a good one, or None: it validates and was answered."""
    if schema is not None and (problem := arguments_problem(arguments, schema)) is not None:
        return f"arguments: {problem}"
    if not ok:
        return f"the tool answered with an error: {str(result)[:200]}"
    return None
