"""The purchase plans of ``bench/entry.py``'s fault runs, built here without a model.

Shop orders, flights, hotels, food, two purchases in one plan, and purchases the seller refuses once
the money is held; each paid by whoever of carol and alice can afford it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from entry_state import State
from entry_world import TASK_WAIT_S

# (words, quantity at most, dearest price in either shop): items both shops list, or with deep stock.
SHOP_ITEMS = (
    ("quill fountain pen", 2, 19900),
    ("summit yoga mat", 2, 12900),
    ("orchid phone case", 2, 4900),
    ("willow desk lamp", 2, 16900),
    ("kestrel m3 wireless mouse", 2, 15900),
    ("pebble 10000mah power bank", 1, 12900),
    ("jade green tea", 1, 6800),
    ("quill a5 notebook", 1, 3900),
)
# (from, to, date, rule, dearest flight on the route that day)
FLIGHTS = (
    ("Hangzhou", "Shanghai", "2026-12-06", "cheapest", 73000),
    ("Hangzhou", "Beijing", "2026-12-06", "cheapest", 110000),
    ("Shanghai", "Chengdu", "2026-12-06", "cheapest", 68000),
    ("Shanghai", "Chengdu", "2026-12-06", "earliest", 68000),
    ("Shenzhen", "Chengdu", "2026-12-06", "cheapest", 61000),
    ("Hangzhou", "Shenzhen", "2026-12-05", "earliest", 52000),
    ("Chengdu", "Beijing", "2026-12-06", "earliest", 88000),
)
# (city, words, rule, price per night)
HOTELS = (
    ("Hangzhou", "pine inn", "cheapest", 37000),
    ("Beijing", "maple inn", "cheapest", 34000),
    ("Shanghai", "harbor inn", "cheapest", 37000),
    ("Shanghai", "hotel", "best", 60000),
    ("Chengdu", "crane inn", "cheapest", 32000),
)
# (city, cuisine words, dish words, dearest dish price); delivery is 500 more
DISHES = (
    ("Hangzhou", "noodles", "beef noodle soup", 2800),
    ("Hangzhou", "cantonese", "egg tarts", 1800),
    ("Hangzhou", "salad", "tofu quinoa bowl", 3900),
    ("Hangzhou", "noodles", "cucumber salad", 1200),
    ("Shanghai", "seafood", "crab fried rice", 6800),
)
DELIVERY_CENTS = 500
# The world refuses these after the money is authorised: out of stock, sold out, full, closed.
REFUSED = ("shop-no-stock", "flight-sold-out", "hotel-full", "food-closed")
KINDS = {"shop": 5, "flight": 3, "hotel": 3, "food": 3, "double": 4, "refused": 3}

Steps = list[dict[str, Any]]


@dataclass(frozen=True)
class Piece:
    """Part of a plan: its steps, what it buys in words, how many purchases, the most it may cost."""

    steps: Steps
    label: str
    purchases: int
    bound_cents: int
    must_fail: bool = False


def shop_piece(
    p: str,
    words: str,
    quantity: int,
    price: int,
    shops: Iterable[str] = ("northwind", "lakeside"),
    where: str = "available",
) -> Piece:
    names = list(shops)
    steps: Steps = [
        {"id": f"{p}s{i}", "call": f"{s}.search", "args": {"query": words}} for i, s in enumerate(names)
    ]
    choose = {
        "id": f"{p}pick",
        "choose": "cheapest",
        "from": [s["id"] for s in steps],
        "where": where,
        "match": words,
    }
    buy = {
        "id": f"{p}buy",
        "call": f"{names[0]}.create_order",
        "args": {"sku": f"${p}pick.sku", "quantity": quantity},
    }
    return Piece([*steps, choose, buy], f"{quantity} x {words}", 1, price * quantity, where == "any")


def flight_piece(
    p: str, frm: str, to: str, day: str, rule: str, price: int, where: str = "available", match: str = ""
) -> Piece:
    steps: Steps = [
        {
            "id": f"{p}f",
            "call": "travel.search_flights",
            "args": {"from_city": frm, "to_city": to, "date": day},
        },
        {"id": f"{p}pick", "choose": rule, "from": [f"{p}f"], "where": where, "match": match},
        {"id": f"{p}buy", "call": "travel.book", "args": {"kind": "flight", "item_id": f"${p}pick.id"}},
    ]
    return Piece(steps, f"{rule} flight {frm}-{to} {day}", 1, price, where == "any")


def hotel_piece(
    p: str, city: str, words: str, rule: str, price: int, nights: int, where: str = "available"
) -> Piece:
    steps: Steps = [
        {"id": f"{p}h", "call": "travel.search_hotels", "args": {"city": city}},
        {"id": f"{p}pick", "choose": rule, "from": [f"{p}h"], "where": where, "match": words},
        {
            "id": f"{p}buy",
            "call": "travel.book",
            "args": {"kind": "hotel", "item_id": f"${p}pick.id", "nights": nights},
        },
    ]
    return Piece(steps, f"{nights} night(s) at the {rule} {words}, {city}", 1, price * nights, where == "any")


def food_piece(
    p: str, city: str, cuisine: str, dish: str, price: int, quantity: int, where: str = "available"
) -> Piece:
    steps: Steps = [
        {"id": f"{p}r", "call": "food.restaurants", "args": {"city": city}},
        {"id": f"{p}rest", "choose": "nearest", "from": [f"{p}r"], "where": where, "match": cuisine},
        {"id": f"{p}m", "call": "food.menu", "args": {"restaurant_id": f"${p}rest.id"}},
        {"id": f"{p}dish", "choose": "first", "from": [f"{p}m"], "where": "any", "match": dish},
        {
            "id": f"{p}buy",
            "call": "food.order",
            "args": {
                "restaurant_id": f"${p}rest.id",
                "items": [{"item": f"${p}dish.item", "quantity": quantity}],
            },
        },
    ]
    bound = price * quantity + DELIVERY_CENTS
    return Piece(steps, f"{quantity} x {dish} ({cuisine}, {city})", 1, bound, where == "any")


def refused_piece(p: str, which: str) -> Piece:
    """A purchase the seller refuses once the money is held; the saga must give it back."""
    if which == "shop-no-stock":
        return shop_piece(p, "aurora x2 pro wireless earbuds", 1, 52900, shops=("lakeside",), where="any")
    if which == "flight-sold-out":
        return flight_piece(p, "Hangzhou", "Chengdu", "2026-12-05", "cheapest", 110000, where="any")
    if which == "hotel-full":
        return hotel_piece(p, "Hangzhou", "harbor hotel", "first", 63000, 1, where="any")
    return food_piece(p, "Hangzhou", "hotpot", "mala hotpot", 16800, 1, where="any")


def random_piece(rng: random.Random, p: str, kind: str) -> Piece:
    if kind == "shop":
        words, most, price = rng.choice(SHOP_ITEMS)
        return shop_piece(p, words, rng.randint(1, most), price)
    if kind == "flight":
        return flight_piece(p, *rng.choice(FLIGHTS))
    if kind == "hotel":
        city, words, rule, price = rng.choice(HOTELS)
        return hotel_piece(p, city, words, rule, price, rng.randint(1, 3))
    if kind == "food":
        city, cuisine, dish, price = rng.choice(DISHES)
        return food_piece(p, city, cuisine, dish, price, rng.randint(1, 3))
    return refused_piece(p, rng.choice(REFUSED))


def joined(first: Piece, second: Piece) -> Piece:
    return Piece(
        first.steps + second.steps,
        f"{first.label}, then {second.label}",
        first.purchases + second.purchases,
        first.bound_cents + second.bound_cents,
        first.must_fail or second.must_fail,
    )


def double_piece(rng: random.Random) -> Piece:
    """Two purchases in one plan; one time in four the second is refused and the first undone."""
    pair = rng.choice((("shop", "food"), ("flight", "hotel"), ("shop", "shop"), ("shop", "refused")))
    return joined(random_piece(rng, "x", pair[0]), random_piece(rng, "y", pair[1]))


@dataclass(frozen=True)
class FaultPlan:
    n: int
    kind: str
    user: str
    piece: Piece

    @property
    def input(self) -> str:
        return f"bench fault run {self.n:02d}: {self.piece.label}"

    def body(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "user": self.user,
            "confirm": True,
            "wait": TASK_WAIT_S,
            "plan": {"steps": self.piece.steps},
        }


def available(state: State, user: str) -> int:
    wallet = state.wallets[user]
    return wallet.balance_cents - wallet.held_cents


def next_plan(rng: random.Random, n: int, state: State, kind: str | None = None) -> FaultPlan:
    """A random plan (``kind`` or one drawn by weight), paid by carol or alice, whoever can afford it."""
    kind = kind or rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    piece = double_piece(rng) if kind == "double" else random_piece(rng, "x", kind)
    users = ["carol", "alice"] if rng.random() < 0.3 else ["alice", "carol"]
    payer = next((u for u in users if available(state, u) >= piece.bound_cents), None)
    if payer is None:  # nobody can pay: the payment service refuses to authorise, nothing is bought
        piece = Piece(piece.steps, piece.label + " (more than anyone has)", piece.purchases, 0, True)
    return FaultPlan(n, kind, payer or "alice", piece)
