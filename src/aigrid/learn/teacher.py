"""Reference answers for training tasks, written by code from each task's structured rule.

A training task carries the rule it was made from (``aigrid.learn.world``), so a program can write
the plan a careful planner would: search every shop that may sell the product, choose the cheapest
available match, order it; search the route's flights and book the cheapest or earliest; and so on.
Such a plan is only a candidate: the entry's verifier runs its read-only steps against the live
services and keeps it only when what it would buy is what the rule comes to. The teacher never
sees a held-out task.
"""

from __future__ import annotations

from typing import Any

from aigrid.entry.catalog import Catalog
from aigrid.entry.plan import Plan
from aigrid.entry.planner import WRITTEN_STEPS, validated

Step = dict[str, Any]


class NoReference(ValueError):
    """A rule this teacher cannot write a plan for with the services the catalog has."""


def task_reference(task: dict[str, Any], catalog: Catalog) -> Plan:
    """A training task's reference plan, checked (with its buying steps unless the task only asks):
    NoReference when there is none the planner could write, PlanError when it does not check."""
    raw = reference_plan(task["rule"], catalog, str(task.get("kind")) != "info")
    if len(raw["steps"]) > WRITTEN_STEPS:
        raise NoReference(f"the plan has more than {WRITTEN_STEPS} steps")
    return validated(raw, catalog)


def reference_plan(rule: list[dict[str, Any]], catalog: Catalog, buys: bool) -> dict[str, Any]:
    """The plan (in the plan's own form) for ``rule``; without the buying steps unless ``buys``."""
    steps: list[Step] = []
    for n, part in enumerate(rule):
        prefix = "" if len(rule) == 1 else f"p{n + 1}"
        steps += _part(part, catalog, prefix, buys)
    return {"steps": steps}


def _services(catalog: Catalog, category: str, op: str) -> list[str]:
    found = sorted({o.service for o in catalog.plannable() if o.category == category and o.op == op})
    if not found:
        raise NoReference(f"no {category} service with '{op}' is up")
    return found


def _part(part: dict[str, Any], catalog: Catalog, p: str, buys: bool) -> list[Step]:
    if "buy" in part:
        words = str(part["buy"]).lower()
        shops = [part["shop"]] if part.get("shop") else _services(catalog, "shop", "search")
        searches: list[Step] = [
            {"id": f"{p}s{i + 1}", "call": f"{shop}.search", "args": {"query": words}}
            for i, shop in enumerate(shops)
        ]
        pick: Step = {
            "id": f"{p}pick",
            "choose": "cheapest",
            "from": [s["id"] for s in searches],
            "where": "available",
            "match": words,
        }
        order: Step = {
            "id": f"{p}buy",
            "call": f"{shops[0]}.create_order",
            "args": {"sku": f"${p}pick.sku", "quantity": int(part.get("quantity", 1))},
        }
        return [*searches, pick, *([order] if buys else [])]
    if "flight" in part:
        (travel,) = _services(catalog, "travel", "search_flights")[:1]
        origin, dest, day = part["flight"]
        return [
            {
                "id": f"{p}f",
                "call": f"{travel}.search_flights",
                "args": {"from_city": origin, "to_city": dest, "date": day},
            },
            {"id": f"{p}pick", "choose": part["pick"], "from": [f"{p}f"], "where": "available", "match": ""},
            *(
                [
                    {
                        "id": f"{p}buy",
                        "call": f"{travel}.book",
                        "args": {"kind": "flight", "item_id": f"${p}pick.id"},
                    }
                ]
                if buys
                else []
            ),
        ]
    if "hotel" in part:
        stars = part.get("stars")
        (travel,) = _services(catalog, "travel", "search_hotels")[:1]
        book = {
            "id": f"{p}buy",
            "call": f"{travel}.book",
            "args": {"kind": "hotel", "item_id": f"${p}pick.id", "nights": int(part["nights"])},
        }
        return [
            {"id": f"{p}h", "call": f"{travel}.search_hotels", "args": {"city": part["hotel"]}},
            {
                "id": f"{p}pick",
                "choose": part["pick"],
                "from": [f"{p}h"],
                "where": "available",
                "match": "" if stars is None else f"{int(stars)}-star",
            },
            *([book] if buys else []),
        ]
    if "food" in part:
        return _food(part, catalog, p, buys)
    raise NoReference(f"no reference plan for {part}")


def _food(part: dict[str, Any], catalog: Catalog, p: str, buys: bool) -> list[Step]:
    if part.get("pick") != "nearest" or part.get("restaurant"):
        raise NoReference("a choice picks the nearest restaurant by its cuisine only")
    (food,) = _services(catalog, "food", "restaurants")[:1]
    steps: list[Step] = [
        {"id": f"{p}r", "call": f"{food}.restaurants", "args": {"city": part["food"]}},
        {
            "id": f"{p}rest",
            "choose": "nearest",
            "from": [f"{p}r"],
            "where": "available",
            "match": str(part.get("cuisine") or ""),
        },
        {"id": f"{p}m", "call": f"{food}.menu", "args": {"restaurant_id": f"${p}rest.id"}},
    ]
    items = []
    for n, line in enumerate(part["items"]):
        dish = f"{p}d{n + 1}"
        steps.append(
            {
                "id": dish,
                "choose": "first",
                "from": [f"{p}m"],
                "where": "any",
                "match": str(line["item"]).lower(),
            }
        )
        items.append({"item": f"${dish}.item", "quantity": int(line["quantity"])})
    if buys:
        steps.append(
            {
                "id": f"{p}buy",
                "call": f"{food}.order",
                "args": {"restaurant_id": f"${p}rest.id", "items": items},
            }
        )
    return steps
