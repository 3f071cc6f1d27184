"""What each task of ``tests/data/entry_tasks.jsonl`` must buy, worked out from the seed data.

Each task carries a ``rule``: the steps the user asked for, in words a program can follow. ``solve``
follows them against a ``World`` (the seed, or the seed after the purchases of earlier tasks) and
says what the task must buy, or why it must buy nothing:

- ``{"buy": NAME, "quantity": n, "shop"?: SHOP}``: the product called NAME (exactly as in
  ``shops.json``) from the shop (either, or the one named) that sells it cheapest with at least n in
  stock, all n in one order;
- ``{"flight": [FROM, TO, DATE], "pick": "cheapest"|"earliest"}``: one seat on the cheapest or
  earliest flight of that route and day that has a seat left;
- ``{"hotel": CITY, "nights": n, "pick": "cheapest", "stars"?: s}``: one room for n nights in the
  cheapest hotel of the city (with that many stars) that has a room left;
- ``{"food": CITY, "items": [{"item", "quantity"}], "pick": "nearest"|"cheapest", "cuisine"?: C,
  "restaurant"?: ID}``: one delivery from the nearest (or cheapest in total) open restaurant of the
  city (of that cuisine, or that one) whose menu has every item.

A step with no candidate makes the task ``impossible``; a total over the user's balance makes it
``insufficient``; either way the task must buy nothing (a plan is all or nothing). Best candidates
must be unique: a tie is an error in the task file.

``check_tasks`` is what ``tests/examples/test_entry_state.py`` runs; after editing a task's rule,
``.venv/bin/python -m tests.examples.entry_tasks`` rewrites every ``expect`` from the rules.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASKS = Path(__file__).resolve().parents[1] / "data" / "entry_tasks.jsonl"
KINDS = ("purchase", "booking", "food", "impossible", "insufficient", "info")
STEP_KINDS = {"purchase": {"buy"}, "booking": {"flight", "hotel"}, "food": {"food"}}


class TaskError(ValueError):
    """A task whose rule is ambiguous or names something the seed does not have."""


@dataclass
class World:
    """What can be bought and who has how much, as the services hold it."""

    products: dict[tuple[str, str], dict[str, Any]]  # (shop, sku) -> product
    flights: dict[str, dict[str, Any]]
    hotels: dict[str, dict[str, Any]]
    restaurants: dict[str, dict[str, Any]]
    delivery_fee_cents: int
    balances: dict[str, int]

    @classmethod
    def from_seed(cls, seed: Path) -> World:
        def read(name: str) -> Any:
            return json.loads((seed / name).read_text(encoding="utf-8"))

        shops, travel, food = read("shops.json"), read("travel.json"), read("food.json")
        return cls(
            products={(s["id"], p["sku"]): dict(p) for s in shops["shops"] for p in s["products"]},
            flights={f["id"]: dict(f) for f in travel["flights"]},
            hotels={h["id"]: dict(h) for h in travel["hotels"]},
            restaurants={
                r["id"]: {**r, "menu": {m["item"]: m["price_cents"] for m in r["menu"]}}
                for r in food["restaurants"]
            },
            delivery_fee_cents=food["delivery_fee_cents"],
            balances={w["user"]: w["balance_cents"] for w in read("wallet.json")["wallets"]},
        )

    def copy(self) -> World:
        return copy.deepcopy(self)


@dataclass
class Outcome:
    """What a task's rule comes to: ``ok`` with its purchases, ``impossible`` or ``insufficient``."""

    status: str
    purchases: list[dict[str, Any]]
    cost_cents: int
    why: str = ""


def _best(candidates: list[tuple[Any, str, dict[str, Any]]], what: str) -> tuple[str, dict[str, Any]]:
    """The one candidate with the smallest key; a tie is an error."""
    candidates.sort(key=lambda c: c[0])
    if len(candidates) > 1 and candidates[0][0] == candidates[1][0]:
        raise TaskError(f"{what}: a tie between {candidates[0][1]} and {candidates[1][1]}")
    return candidates[0][1], candidates[0][2]


def _step(world: World, step: dict[str, Any]) -> tuple[dict[str, Any], int] | str:
    """One step's purchase and cost, or why nothing fits."""
    if "buy" in step:
        name, quantity = step["buy"], step.get("quantity", 1)
        named = [(shop, p) for (shop, _), p in world.products.items() if p["name"] == name]
        if step.get("shop"):
            named = [(shop, p) for shop, p in named if shop == step["shop"]]
        fits = [(p["price_cents"], shop, p) for shop, p in named if p["stock"] >= quantity]
        if not fits:
            return f"nobody sells {quantity} of {name!r}" if named else f"no product {name!r}"
        shop, product = _best(fits, f"buy {name}")
        purchase = {"service": shop, "item": product["sku"], "quantity": quantity}
        return purchase, product["price_cents"] * quantity
    if "flight" in step:
        origin, dest, day = step["flight"]
        route = [
            f for f in world.flights.values() if (f["from"], f["to"], f["depart"][:10]) == (origin, dest, day)
        ]
        if step["pick"] not in ("cheapest", "earliest"):
            raise TaskError(f"unknown pick in {step}")
        key = "price_cents" if step["pick"] == "cheapest" else "depart"
        fits = [(f[key], f["id"], f) for f in route if f["seats"] >= 1]
        if not fits:
            return (
                f"no seat from {origin} to {dest} on {day}" if route else f"no flight {origin}-{dest} {day}"
            )
        flight_id, flight = _best(fits, f"flight {origin}-{dest} {day}")
        return {"service": "travel", "item": flight_id, "quantity": 1}, flight["price_cents"]
    if "hotel" in step:
        city, nights = step["hotel"], step["nights"]
        if step["pick"] != "cheapest":
            raise TaskError(f"unknown pick in {step}")
        in_city = [
            h for h in world.hotels.values() if h["city"] == city and step.get("stars") in (None, h["stars"])
        ]
        fits = [(h["price_per_night_cents"], h["id"], h) for h in in_city if h["rooms"] >= 1]
        if not fits:
            return f"no room in {city}" if in_city else f"no hotel in {city}"
        hotel_id, hotel = _best(fits, f"hotel {city}")
        purchase = {"service": "travel", "item": hotel_id, "quantity": 1, "nights": nights}
        return purchase, hotel["price_per_night_cents"] * nights
    if "food" in step:
        city, lines = step["food"], step["items"]
        places = [
            r
            for r in world.restaurants.values()
            if r["city"] == city
            and step.get("cuisine") in (None, r["cuisine"])
            and step.get("restaurant") in (None, r["id"])
            and all(line["item"] in r["menu"] for line in lines)
        ]
        if step["pick"] not in ("nearest", "cheapest"):
            raise TaskError(f"unknown pick in {step}")
        if not places:
            raise TaskError(f"no restaurant in {city} fits {step}: the step is wrong, not impossible")

        def total(r: dict[str, Any]) -> int:
            return int(sum(r["menu"][x["item"]] * x["quantity"] for x in lines)) + world.delivery_fee_cents

        def by(r: dict[str, Any]) -> float:
            return float(r["distance_km"]) if step["pick"] == "nearest" else total(r)

        fits = [(by(r), r["id"], r) for r in places if r["open"]]
        if not fits:
            return f"every fitting restaurant in {city} is closed"
        place_id, place = _best(fits, f"food {city}")
        purchase = {"service": "food", "item": place_id, "quantity": 1, "items": [dict(x) for x in lines]}
        return purchase, total(place)
    raise TaskError(f"unknown step {step}")


def solve(world: World, rule: list[dict[str, Any]], user: str) -> Outcome:
    """What ``rule`` comes to for ``user`` in ``world`` (which it does not change)."""
    purchases: list[dict[str, Any]] = []
    cost = 0
    for step in rule:
        found = _step(world, step)
        if isinstance(found, str):
            return Outcome("impossible", [], 0, found)
        purchases.append(found[0])
        cost += found[1]
    if cost > world.balances[user]:
        return Outcome("insufficient", purchases, cost, f"{cost} cents > {world.balances[user]}")
    return Outcome("ok", purchases, cost)


def apply(world: World, outcome: Outcome, user: str) -> None:
    """Take what ``outcome`` buys out of ``world`` and the money out of the user's balance."""
    for p in outcome.purchases:
        if p["service"] in ("northwind", "lakeside"):
            world.products[(p["service"], p["item"])]["stock"] -= p["quantity"]
        elif p["item"] in world.flights:
            world.flights[p["item"]]["seats"] -= 1
        elif p["item"] in world.hotels:
            world.hotels[p["item"]]["rooms"] -= 1
    world.balances[user] -= outcome.cost_cents


def load_tasks(path: Path = TASKS) -> list[dict[str, Any]]:
    """The task file, one JSON object a line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_tasks(tasks: list[dict[str, Any]], seed: Path) -> list[str]:
    """Every way the tasks disagree with the seed, one line each (empty: they all hold).

    Each task's rule is solved twice: against the seed as it is, and against the seed after every
    earlier task bought what it expects (the tasks run in file order on the same services). Both
    must give the task's ``expect``. Purchases only ever lower stock and balances and each rule
    picks by a fixed order, so agreeing at both ends means the expectation holds whichever earlier
    tasks succeeded.
    """
    problems: list[str] = []
    pristine, running = World.from_seed(seed), World.from_seed(seed)
    for task in tasks:
        tid, kind, user = task["id"], task["kind"], task["user"]
        try:
            fresh = solve(pristine, task["rule"], user)
            later = solve(running, task["rule"], user)
        except TaskError as exc:
            problems.append(f"{tid}: {exc}")
            continue
        if (fresh.status, fresh.purchases) != (later.status, later.purchases):
            problems.append(
                f"{tid}: earlier tasks change it: {fresh.status} {fresh.purchases} at the seed,"
                f" {later.status} {later.purchases} after them"
            )
        want_status = {"impossible": "impossible", "insufficient": "insufficient"}.get(kind, "ok")
        if later.status != want_status:
            problems.append(f"{tid}: kind {kind} but the rule comes to {later.status} ({later.why})")
        want = later.purchases if kind in STEP_KINDS else []
        if task["expect"] != want:
            problems.append(f"{tid}: expect {task['expect']} but the seed implies {want}")
        if kind in STEP_KINDS:
            steps = {next(k for k in ("buy", "flight", "hotel", "food") if k in s) for s in task["rule"]}
            if not steps <= STEP_KINDS[kind]:
                problems.append(f"{tid}: kind {kind} with steps {sorted(steps)}")
            apply(running, later, user)
        if kind == "info" and task.get("answer") != later.purchases:
            problems.append(f"{tid}: answer {task.get('answer')} but the seed implies {later.purchases}")
    return problems


def fill_expectations(tasks: list[dict[str, Any]], seed: Path) -> list[dict[str, Any]]:
    """The tasks with ``expect`` (and ``answer`` for info ones) worked out from their rules, in order."""
    running = World.from_seed(seed)
    filled: list[dict[str, Any]] = []
    for task in tasks:
        outcome = solve(running, task["rule"], task["user"])
        done = {**task, "expect": outcome.purchases if task["kind"] in STEP_KINDS else []}
        if task["kind"] == "info":
            done["answer"] = outcome.purchases
        if task["kind"] in STEP_KINDS:
            apply(running, outcome, task["user"])
        filled.append(done)
    return filled


def main() -> None:
    """Rewrite the task file's expectations from its rules and the seed, then check it.

    ``.venv/bin/python -m tests.examples.entry_tasks [SEED_DIR]``, from the repository root, after
    adding or editing a task's ``id``, ``input``, ``user``, ``kind`` and ``rule``.
    """
    import os
    import sys

    root = Path(__file__).resolve().parents[2]
    default = Path(os.environ.get("AIGRID_SHARED", root.parent / "shared")) / "fixtures" / "services"
    seed = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    tasks = fill_expectations(load_tasks(), seed)
    TASKS.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks), encoding="utf-8")
    problems = check_tasks(tasks, seed)
    print("\n".join(problems) or f"{len(tasks)} tasks agree with the seed in {seed}")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
