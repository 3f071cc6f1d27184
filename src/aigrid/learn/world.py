"""The example world as data, and what a task's rule comes to in it.

A task carries a ``rule``: the steps the user asked for, in words a program can follow. ``solve``
follows them against a ``World`` (the services' seed, or the seed after earlier purchases) and
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
must be unique: a tie is an error in the task.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
