"""Training splits made from the example services' own catalogs, kept apart from the held-out ones.

``python -m aigrid.learn.generate [SEED_DIR]`` writes, into ``src/aigrid/learn/suites/``:

- ``entry_train.jsonl``: sentences for the super entry in the held-out format, one for every
  product of both shops (quantities 1 to 3 within stock, some naming the shop), every flight route
  and day (cheapest or earliest), every city's cheapest hotel (1 to 3 nights), every restaurant's
  dishes (the nearest place of its cuisine), questions that buy nothing (``info``), things nobody
  sells or flies (``impossible``) and totals over a user's balance (``insufficient``). Each is a
  template of ``aigrid.learn.phrasings`` filled in; ``expect`` (and an info task's ``answer``) is
  what ``aigrid.learn.world.solve`` says against the pristine seed, each task standing alone. A
  rule that ties, or whose outcome is not the kind the sentence was written for, is left out.
- ``compiler_train.jsonl``: agent descriptions (a schedule phrase, an action per tool and maybe a
  follow-up, 1 to 3 tools) in the held-out format, the trigger read by ``parse_when`` at
  2026-11-23T10:00+08:00 in Asia/Shanghai; a description whose reading is not the schedule it was
  written with is left out. About one in twenty should make no agent (``"error": true``). A family
  of descriptions whose date or time is the task's object ("book the earliest flight on Dec 5")
  means no trigger though ``parse_when`` reads a one-time one; marked ``"date_is_object": true``,
  one it reads as a recurrence is left out.
- ``tools_train.jsonl``: requests to call one of 3 to 5 offered tools of ``compiler_tools.json``,
  with the arguments the request states. ``tools_heldout.jsonl`` is hand-written; it is only checked.
- ``entry_unseen.jsonl``: the entry suite's entity-disjoint split. ``choose_unseen`` picks, from the
  seed alone (sorted names, every k-th), about 15% of the products (among those both shops list),
  3 flight routes (origin and destination, any day) and a restaurant (the one open place of its
  city and cuisine), none of which a hand-written held-out task mentions. No training task of any
  suite names them (its rule or its text; ``Unseen.in_rule`` and ``aigrid.learn.suites.held_out``),
  and the unseen split is made of them alone, phrased with ``phrasings``' ``UNSEEN_*`` templates,
  which nothing else uses, ``expect`` again from ``solve``.
- ``splits.json``: every split's file, size, SHA-256 and how it was made, and the unseen entities.

The held-out files are read only so that no training text equals a held-out one (lower case, words
only) and so that no unseen entity is one they mention. A fixed random seed makes the files the same
on every run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aigrid.kernel.when import parse_when
from aigrid.learn import phrasings as P
from aigrid.learn import phrasings_agents as PA
from aigrid.learn.suites import Mentions, normalised
from aigrid.learn.world import STEP_KINDS, TaskError, World, solve
from aigrid.spec import CronTrigger, IntervalTrigger, OnceTrigger

SUITES = Path(__file__).resolve().parent / "suites"
RANDOM_SEED = 17
COMPILER_NOW = datetime.fromisoformat("2026-11-23T10:00:00+08:00")  # a Monday, as the held-out cases
COMPILER_TIMEZONE = "Asia/Shanghai"
HELD_OUT = {
    "entry": "entry_heldout.jsonl",
    "compiler": "compiler_heldout.jsonl",
    "tools": "tools_heldout.jsonl",
}
TRAIN = {"entry": "entry_train.jsonl", "compiler": "compiler_train.jsonl", "tools": "tools_train.jsonl"}
UNSEEN = {"entry": "entry_unseen.jsonl"}
CATALOG = "compiler_tools.json"
BUILT_INS = ("time.now", "notify.owner", "agent.message", "process.spawn")
_WANT_STATUS = {"impossible": "impossible", "insufficient": "insufficient"}  # every other kind: ok
_TEMPLATES_PER_ACTION = 7  # descriptions tried per action template (some readings are dropped)
_TOOL_FILLS = 6  # requests made per tool-call template
_DATE_OBJECT_FILLS = 3  # descriptions tried per template of dates as the task's object
# How many entities of each sort the unseen split is about: about 15% of the product names, so
# that training still covers most of the catalog, and a few routes and restaurants.
UNSEEN_PRODUCT_SHARE = 0.15
UNSEEN_ROUTES = 3
UNSEEN_RESTAURANTS = 1


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file's objects."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def held_out_texts(folder: Path = SUITES) -> set[str]:
    """Every held-out input and description, normalised: the texts no training task may repeat."""
    texts: set[str] = set()
    for name in HELD_OUT.values():
        if (folder / name).exists():
            texts |= {
                normalised(t.get("input") or t.get("description") or "") for t in read_jsonl(folder / name)
            }
    return texts  # "" among them: the held-out split has an empty description


@dataclass(frozen=True)
class Wording:
    """The template families an entry split is phrased with (see ``aigrid.learn.phrasings``)."""

    buy: tuple[str, ...]
    cheap: tuple[str, ...]
    buy_at: tuple[str, ...]
    flight: Mapping[str, tuple[str, ...]]
    hotel: tuple[str, ...]
    trip: tuple[str, ...]
    food: tuple[str, ...]
    info_product: tuple[str, ...]
    info_flight: Mapping[str, tuple[str, ...]]
    info_hotel: tuple[str, ...]
    info_food: tuple[str, ...]

    def templates(self) -> list[str]:
        """Every template of every family (the ``cheap`` phrases are no templates)."""
        found: list[str] = []
        for name, family in vars(self).items():
            if name != "cheap":
                found += [t for ts in family.values() for t in ts] if isinstance(family, Mapping) else family
        return found


TRAINING_WORDING = Wording(
    buy=P.BUY, cheap=P.CHEAP, buy_at=P.BUY_AT, flight=P.FLIGHT, hotel=P.HOTEL, trip=P.TRIP, food=P.FOOD,
    info_product=P.INFO_PRODUCT, info_flight=P.INFO_FLIGHT, info_hotel=P.INFO_HOTEL, info_food=P.INFO_FOOD,
)  # fmt: skip
# The unseen split has no hotel-only tasks: hotels are no unseen entity.
UNSEEN_WORDING = Wording(
    buy=P.UNSEEN_BUY, cheap=P.UNSEEN_CHEAP, buy_at=P.UNSEEN_BUY_AT, flight=P.UNSEEN_FLIGHT, hotel=(),
    trip=P.UNSEEN_TRIP, food=P.UNSEEN_FOOD, info_product=P.UNSEEN_INFO_PRODUCT,
    info_flight=P.UNSEEN_INFO_FLIGHT, info_hotel=(), info_food=P.UNSEEN_INFO_FOOD,
)  # fmt: skip


def _food_places(world: World, step: dict[str, Any]) -> set[str]:
    """The restaurants a food step picks among, open or not (as ``solve`` narrows them)."""
    return {
        rid
        for rid, r in world.restaurants.items()
        if r["city"] == step["food"]
        and step.get("cuisine") in (None, r["cuisine"])
        and step.get("restaurant") in (None, rid)
        and all(line["item"] in r["menu"] for line in step["items"])
    }


@dataclass(frozen=True)
class Unseen:
    """The seed's entities that no training task mentions: what the entry suite's unseen split is about."""

    products: tuple[str, ...] = ()
    routes: tuple[tuple[str, str], ...] = ()  # (origin, destination), any day
    restaurants: tuple[str, ...] = ()  # ids; a rule picks each by its city and cuisine

    def in_rule(self, world: World, rule: list[dict[str, Any]]) -> bool:
        """Whether a step buys an unseen product, flies an unseen route or may pick an unseen restaurant."""
        for step in rule:
            if "buy" in step and step["buy"] in self.products:
                return True
            if "flight" in step and (step["flight"][0], step["flight"][1]) in self.routes:
                return True
            if "food" in step and _food_places(world, step) & set(self.restaurants):
                return True
        return False

    def entities(self, world: World) -> dict[str, Any]:
        """The record ``splits.json`` keeps: the entities, and the names by which text mentions them."""
        places = [world.restaurants[rid] for rid in self.restaurants]
        others = [r for rid, r in world.restaurants.items() if rid not in self.restaurants]
        other_dishes, other_cuisines = {d for r in others for d in r["menu"]}, {r["cuisine"] for r in others}
        # Their SKUs and flight numbers too: a request or a tool call can name them instead.
        names = [
            *self.products,
            *sorted(sku for (_, sku), p in world.products.items() if p["name"] in self.products),
        ]
        names += sorted(f["id"] for f in world.flights.values() if (f["from"], f["to"]) in self.routes)
        for r in places:
            names += [r["name"], r["id"], *sorted(d for d in r["menu"] if d not in other_dishes)]
        return {
            "products": list(self.products),
            "routes": [list(route) for route in self.routes],
            "restaurants": [{k: r[k] for k in ("id", "name", "city", "cuisine")} for r in places],
            "names": names,
            # A cuisine no other restaurant has: its place ("salad place") is the restaurant's.
            "cuisine_words": sorted(
                {
                    w
                    for r in places
                    if r["cuisine"] not in other_cuisines
                    for w in P.CUISINE_WORDS[r["cuisine"]]
                }
            ),
        }

    def mentions(self, world: World) -> Mentions:
        """Whether a text names one of these entities (as ``aigrid.learn.suites.held_out`` judges)."""
        return Mentions.of(self.entities(world))


def _every_kth(candidates: list[Any], count: int) -> list[Any]:
    """``count`` of the candidates spread evenly over them: the first, then every k-th."""
    return candidates[:: max(1, len(candidates) // count)][:count] if count else []


def choose_unseen(world: World, heldout: list[dict[str, Any]]) -> Unseen:
    """The unseen entities: evenly spread over the sorted candidates no hand-written held-out task mentions.

    Products are those both shops list and one has in stock (so that buying one is still a choice
    between shops), about ``UNSEEN_PRODUCT_SHARE`` of the distinct names; routes are origin and
    destination pairs with a seat left on some flight; restaurants are open and the only one of
    their city and cuisine, which is what a rule picks them by. Only the seed and the held-out file
    decide; no random numbers.
    """

    def free(candidate: Unseen) -> bool:
        mentions = candidate.mentions(world)
        return not any(candidate.in_rule(world, t["rule"]) or mentions(t["input"]) for t in heldout)

    names = sorted({p["name"] for p in world.products.values()})
    shops = {shop for shop, _ in world.products}
    products = [
        n
        for n in names
        if {s for (s, _), p in world.products.items() if p["name"] == n} == shops
        and any(p["stock"] > 0 for p in world.products.values() if p["name"] == n)
        and free(Unseen(products=(n,)))
    ]
    routes = sorted({(f["from"], f["to"]) for f in world.flights.values() if f["seats"] > 0})
    routes = [r for r in routes if free(Unseen(routes=(r,)))]
    kinds = Counter((r["city"], r["cuisine"]) for r in world.restaurants.values())
    places = sorted(
        (r["city"], r["cuisine"], rid)
        for rid, r in world.restaurants.items()
        if r["open"] and kinds[r["city"], r["cuisine"]] == 1 and free(Unseen(restaurants=(rid,)))
    )
    return Unseen(
        products=tuple(_every_kth(products, max(1, round(UNSEEN_PRODUCT_SHARE * len(names))))),
        routes=tuple(_every_kth(routes, UNSEEN_ROUTES)),
        restaurants=tuple(rid for _, _, rid in _every_kth(places, UNSEEN_RESTAURANTS)),
    )


class _Entry:
    """Collects entry tasks, each checked against the seed and against the held-out sentences."""

    def __init__(
        self,
        world: World,
        rng: random.Random,
        held: set[str],
        words: Wording = TRAINING_WORDING,
        avoid: Unseen | None = None,
    ) -> None:
        self.world, self.rng, self.held, self.words, self.avoid = world, rng, held, words, avoid
        self.mentions_avoided = avoid.mentions(world) if avoid else (lambda _: False)
        self.users = sorted(world.balances)
        self.tasks: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.skipped: Counter[str] = Counter()

    def add(self, kind: str, rule: list[dict[str, Any]], render: Callable[[], str]) -> bool:
        """Keep a task of ``kind`` for ``rule``, phrased by ``render``, if the seed bears the kind out."""
        if self.avoid is not None and self.avoid.in_rule(self.world, rule):
            self.skipped["names an unseen entity"] += 1
            return False
        want = _WANT_STATUS.get(kind, "ok")
        fits = []
        for user in self.users:
            try:
                outcome = solve(self.world, rule, user)
            except TaskError:
                self.skipped["tie or unknown name"] += 1
                return False
            if outcome.status == want:
                fits.append((user, outcome))
        if not fits:
            self.skipped[f"not {kind}"] += 1
            return False
        for _ in range(8):  # another wording when this one is taken or held out
            text = render()
            key = normalised(text)
            if key not in self.seen and key not in self.held and not self.mentions_avoided(text):
                break
        else:
            self.skipped["wording taken"] += 1
            return False
        self.seen.add(key)
        # Most tasks are alice's, as most real requests would come from one well-off user.
        user, outcome = self.rng.choices(fits, weights=[3 if u == "alice" else 1 for u, _ in fits])[0]
        task: dict[str, Any] = {"id": "", "input": text, "user": user, "kind": kind}
        task["expect"] = outcome.purchases if kind in STEP_KINDS else []
        task["rule"] = rule
        if kind == "info":
            task["answer"] = outcome.purchases
        self.tasks.append(task)
        return True

    def buy(self, kind: str, name: str, quantity: int, shop: str | None = None) -> bool:
        rng, words = self.rng, self.words
        rule: dict[str, Any] = {"buy": name, "quantity": quantity}
        if shop:
            rule["shop"] = shop

        def render() -> str:
            items = P.amount(rng, quantity, P.product(rng, name), rng.choice(("units", "pieces")))
            it = "it" if quantity == 1 else "them"
            if kind == "info":
                return P.cap(rng.choice(words.info_product).format(name=P.product(rng, name)))
            if shop:
                return P.cap(
                    rng.choice(words.buy_at).format(items=items, it=it, shop=rng.choice(P.SHOP_NAMES[shop]))
                )
            return P.cap(rng.choice(words.buy).format(items=items, it=it, cheap=rng.choice(words.cheap)))

        return self.add(kind, [rule], render)

    def flight(self, kind: str, route: tuple[str, str, str], pick: str) -> bool:
        rng, (a, b, day) = self.rng, route
        templates = self.words.info_flight[pick] if kind == "info" else self.words.flight[pick]
        rule = [{"flight": [a, b, day], "pick": pick}]
        return self.add(
            kind, rule, lambda: P.cap(rng.choice(templates).format(a=a, b=b, date=P.say_date(rng, day)))
        )

    def hotel(self, kind: str, city: str, nights: int) -> bool:
        rng, templates = self.rng, self.words.info_hotel if kind == "info" else self.words.hotel
        rule = [{"hotel": city, "nights": nights, "pick": "cheapest"}]
        return self.add(
            kind, rule, lambda: P.cap(rng.choice(templates).format(city=city, nights=P.nights(rng, nights)))
        )

    def trip(self, kind: str, route: tuple[str, str, str], pick: str, nights: int) -> bool:
        rng, (a, b, day) = self.rng, route
        rule: list[dict[str, Any]] = [
            {"flight": [a, b, day], "pick": pick},
            {"hotel": b, "nights": nights, "pick": "cheapest"},
        ]

        def render() -> str:
            words = "lowest-priced" if pick == "cheapest" and rng.random() < 0.3 else pick
            text = rng.choice(self.words.trip).format(
                a=a, b=b, date=P.say_date(rng, day), pick=words, nights=P.nights(rng, nights)
            )
            return P.cap(text)

        return self.add(kind, rule, render)

    def food(self, kind: str, city: str, cuisine: str, lines: list[dict[str, Any]]) -> bool:
        rng = self.rng
        rule: list[dict[str, Any]] = [{"food": city, "items": lines, "pick": "nearest", "cuisine": cuisine}]

        def render() -> str:
            cw = rng.choice(P.CUISINE_WORDS[cuisine])
            if kind == "info":
                dish = lines[0]["item"] if lines else ""
                templates = [t for t in self.words.info_food if ("{dish}" in t) == bool(lines)]
                return P.cap(rng.choice(templates).format(cw=cw, city=city, dish=dish))
            unit = rng.choice(("portions", "orders", "servings"))
            dishes = " and ".join(P.amount(rng, x["quantity"], x["item"], unit) for x in lines)
            return P.cap(rng.choice(self.words.food).format(dishes=dishes, cw=cw, city=city))

        return self.add(kind, rule, render)


def entry_tasks(
    world: World, rng: random.Random, held: set[str], unseen: Unseen | None = None
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The entry suite's training tasks, ids given, and why others were left out (none about ``unseen``)."""
    e = _Entry(world, rng, held, avoid=unseen)
    names = list(dict.fromkeys(p["name"] for p in world.products.values()))
    stock = {n: max(p["stock"] for p in world.products.values() if p["name"] == n) for n in names}
    cheapest = {n: min(p["price_cents"] for p in world.products.values() if p["name"] == n) for n in names}
    flights = [((f["from"], f["to"], f["depart"][:10]), f["seats"]) for f in world.flights.values()]
    routes = list(dict.fromkeys(route for route, _ in flights))
    open_routes = [r for r in routes if any(seats for route, seats in flights if route == r)]
    cities = list(dict.fromkeys(h["city"] for h in world.hotels.values()))
    days = sorted({r[2] for r in routes})
    for name in names:  # every product, 1 to 3 of it within stock, twice in other words
        for quantity in range(1, min(3, stock[name]) + 1):
            for _ in range(2):
                e.buy("purchase", name, quantity)
    for (shop, _), product in world.products.items():  # every shop's own listing, by the shop's name
        if product["stock"] > 0:
            e.buy("purchase", product["name"], rng.randint(1, min(3, product["stock"])), shop)
        else:
            e.buy("impossible", product["name"], 1, shop)
    for shop, name in itertools.product(P.SHOP_NAMES, names):  # a shop that does not list the product
        if (shop, name) not in {(s, p["name"]) for (s, _), p in world.products.items()}:
            e.buy("impossible", name, rng.randint(1, 2), shop)
    for route, pick in itertools.product(routes, ("cheapest", "earliest")):
        for _ in range(3):
            e.flight("booking", route, pick)
        e.flight("impossible", route, pick)  # sold out: every flight of the day has no seat left
    for city, nights in itertools.product(cities, (1, 2, 3)):
        for _ in range(3):
            e.hotel("booking", city, nights)
    for route, pick in itertools.product(open_routes, ("cheapest", "earliest")):
        if route[1] in cities:
            e.trip("booking", route, pick, rng.randint(1, 3))
    for _ in range(4):  # every restaurant's dishes, alone and in pairs, four times in other amounts
        for city, cuisine, lines in _dish_orders(world.restaurants.values(), rng):
            e.food("food", city, cuisine, lines)
            e.food("impossible", city, cuisine, lines)  # the only places with the dishes are closed
    # Questions: what the cheapest or nearest would be, buying nothing.
    for name, _ in itertools.product(names, range(2)):
        e.buy("info", name, 1)
    for route in open_routes:
        e.flight("info", route, rng.choice(("cheapest", "earliest")))
    for city in cities:
        for nights in sorted({1, rng.randint(2, 3)}):
            e.hotel("info", city, nights)
    for r in world.restaurants.values():
        e.food("info", r["city"], r["cuisine"], [])
        for item in r["menu"]:
            e.food("info", r["city"], r["cuisine"], [{"item": item, "quantity": 1}])
    # Nothing to buy: made-up products, more than any shop has, routes and cities with no service.
    for name in P.MADE_UP_PRODUCTS:
        e.buy("impossible", name, rng.randint(1, 2))
    for name in names:
        if stock[name] <= 12:
            e.buy("impossible", name, stock[name] + rng.randint(1, 3))
    flight_cities = sorted({c for r in routes for c in r[:2]}) + list(P.CITIES_WITHOUT_FLIGHTS)
    pairs = itertools.product(itertools.permutations(flight_cities, 2), days)
    missing = [(a, b, day) for (a, b), day in pairs if (a, b, day) not in routes]
    for route in rng.sample(missing, 30):
        e.flight("impossible", route, rng.choice(("cheapest", "earliest")))
    for city in P.CITIES_WITHOUT_HOTELS:
        e.hotel("impossible", city, rng.randint(1, 3))
    # Over the balance: what bob (or carol) cannot pay for.
    for name in names:
        if cheapest[name] > min(world.balances.values()):
            e.buy("insufficient", name, 1)
    for name in names:
        e.buy("insufficient", name, min(3, stock[name]))
    for route in open_routes:
        e.flight("insufficient", route, rng.choice(("cheapest", "earliest")))
    for city in cities:
        e.hotel("insufficient", city, rng.randint(1, 3))
    for route in open_routes:
        if route[1] in cities:
            e.trip("insufficient", route, "cheapest", 3)
    for city, cuisine, lines in _dish_orders(world.restaurants.values(), rng, larger=True):
        e.food("insufficient", city, cuisine, lines)
    return _numbered(e.tasks, rng, "train-entry"), e.skipped


def _numbered(tasks: list[dict[str, Any]], rng: random.Random, prefix: str) -> list[dict[str, Any]]:
    """The tasks shuffled (kinds mixed, so that the first N of a file are a fair sample), ids given."""
    rng.shuffle(tasks)
    for n, task in enumerate(tasks, 1):
        task["id"] = f"{prefix}-{n:04d}"
    return tasks


def unseen_tasks(
    world: World, rng: random.Random, held: set[str], unseen: Unseen
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The entry suite's unseen split: tasks about the unseen entities alone, in ``UNSEEN_WORDING``.

    Its kinds are in about the held-out split's proportions: purchases (by the cheaper shop and at
    a named one), flights and trips, food orders, questions, and tasks that must buy nothing.
    """
    e = _Entry(world, rng, held, UNSEEN_WORDING)
    listings = [(shop, p) for (shop, _), p in sorted(world.products.items()) if p["name"] in unseen.products]
    stock = {n: max(p["stock"] for _, p in listings if p["name"] == n) for n in unseen.products}
    routes = sorted(
        {
            (f["from"], f["to"], f["depart"][:10])
            for f in world.flights.values()
            if (f["from"], f["to"]) in unseen.routes
        }
    )
    days = sorted({f["depart"][:10] for f in world.flights.values()})
    places = [world.restaurants[rid] for rid in unseen.restaurants]
    picks = ("cheapest", "earliest")
    for name, quantity in itertools.product(unseen.products, (1, 2)):
        e.buy("purchase", name, quantity)
    for shop, product in listings:  # each shop's own listing by the shop's name, when it has stock
        if product["stock"] > 0:
            e.buy("purchase", product["name"], rng.randint(1, min(3, product["stock"])), shop)
        else:
            e.buy("impossible", product["name"], 1, shop)
    for route, pick in itertools.product(routes, picks):
        e.flight("booking", route, pick)
    for a, b in unseen.routes:
        day = rng.choice([d for x, y, d in routes if (x, y) == (a, b)])
        e.trip("booking", (a, b, day), rng.choice(picks), rng.randint(1, 3))
    for _ in range(2):
        for city, cuisine, lines in _dish_orders(places, rng):
            e.food("food", city, cuisine, lines)
    # Questions, buying nothing.
    for name in unseen.products:
        e.buy("info", name, 1)
    e.flight("info", rng.choice(routes), rng.choice(picks))
    for r in places:
        e.food("info", r["city"], r["cuisine"], [])
        e.food("info", r["city"], r["cuisine"], [{"item": rng.choice(sorted(r["menu"])), "quantity": 1}])
    # Nothing to buy: more than anyone has, more than the named shop has, a day the route has no flight.
    for name in unseen.products:
        if stock[name] <= 12:
            e.buy("impossible", name, stock[name] + rng.randint(1, 2))
    for shop, product in listings:
        if 0 < product["stock"] <= 12:
            e.buy("impossible", product["name"], product["stock"] + 1, shop)
    missing = [(a, b, d) for (a, b), d in itertools.product(unseen.routes, days) if (a, b, d) not in routes]
    for route in missing:
        e.flight("impossible", route, rng.choice(picks))
    if missing:
        e.trip("impossible", missing[0], rng.choice(picks), rng.randint(1, 3))
    # Over the balance: what bob (or carol) cannot pay for.
    for name in sorted(rng.sample(unseen.products, min(2, len(unseen.products)))):
        e.buy("insufficient", name, 1)
    for a, b in unseen.routes:
        e.flight("insufficient", next(r for r in routes if r[:2] == (a, b)), rng.choice(picks))
    for city, cuisine, lines in itertools.islice(_dish_orders(places, rng, larger=True), 1):
        e.food("insufficient", city, cuisine, lines)
    return _numbered(e.tasks, rng, "unseen-entry"), e.skipped


def _dish_orders(
    restaurants: Iterable[dict[str, Any]], rng: random.Random, larger: bool = False
) -> Iterable[tuple[str, str, list[dict[str, Any]]]]:
    """Orders of one or two dishes of each restaurant (1 to 3 of each, or 3 to 5 when ``larger``)."""
    low, high = (3, 5) if larger else (1, 3)
    for r in restaurants:
        dishes = list(r["menu"])
        for combo in [[d] for d in dishes] + [list(c) for c in itertools.combinations(dishes, 2)]:
            yield r["city"], r["cuisine"], [{"item": d, "quantity": rng.randint(low, high)} for d in combo]


def _reading(text: str) -> dict[str, Any] | None:
    """The trigger ``parse_when`` reads in ``text``, in the suites' form (None: no schedule)."""
    when = parse_when(text, COMPILER_NOW, COMPILER_TIMEZONE)
    trigger = when.trigger if when else None
    if isinstance(trigger, CronTrigger):
        return {"kind": "cron", "cron": trigger.cron}
    if isinstance(trigger, IntervalTrigger):
        return {"kind": "interval", "every_s": trigger.every_s}
    if isinstance(trigger, OnceTrigger):
        return {"kind": "once", "at": trigger.at.isoformat()}
    return None


def _compiler_words(world: World) -> dict[str, tuple[str, ...]]:
    """What a description's slots are filled with: the seed's names and ``phrasings``' words."""
    names = tuple(dict.fromkeys(p["name"] for p in world.products.values()))
    return {
        **PA.COMPILER_WORDS,
        "product": names,
        "sku": tuple(sku for _, sku in world.products),
        "shop": tuple(n for names in P.SHOP_NAMES.values() for n in names[:2]),
        "dish": tuple(dict.fromkeys(d for r in world.restaurants.values() for d in r["menu"])),
        "restaurant": tuple(r["name"] for r in world.restaurants.values()),
        "cuisine": tuple(dict.fromkeys(w for ws in P.CUISINE_WORDS.values() for w in ws)),
        "city": tuple(dict.fromkeys(h["city"] for h in world.hotels.values())),
        "hotel": tuple(h["name"] for h in world.hotels.values()),
        "route": tuple(dict.fromkeys(f"{f['from']}|{f['to']}" for f in world.flights.values())),
        "date": ("December 5", "December 6"),
        "count": ("2", "3", "two", "three"),
        # The time library reads a bare "150" as 01:50, so some amounts cost their description its
        # schedule and the description is left out; "1,000" it leaves alone.
        "yuan": ("100", "150", "300", "500", "800", "1,000", "2,100", "5,800"),
    }


def _fill(rng: random.Random, words: dict[str, tuple[str, ...]], world: World) -> dict[str, str]:
    filled = {slot: rng.choice(values) for slot, values in words.items()}
    filled["a"], filled["b"] = filled.pop("route").split("|")
    place = next(r for r in world.restaurants.values() if r["name"] == filled["restaurant"])
    filled["dish"] = rng.choice(list(place["menu"]))  # a dish the restaurant named has
    return filled


# The schedule kinds an action is phrased with, in turn: a watch runs on any schedule, a report on
# a calendar, once or now, an action once, now or on a calendar, a reminder at a time.
_KINDS_BY_MODE = {
    "watch": ("cron", "interval", "once", "none", "interval", "cron", "none"),
    "report": ("cron", "once", "none", "cron", "once", "none", "cron"),
    "act": ("none", "once", "cron", "none", "once", "cron", "none"),
    "remind": ("once", "cron", "once", "cron", "once", "interval", "cron"),
}


# Actions whose words would swallow a schedule said after them ("email bob that I'm late tomorrow").
_SCHEDULE_FIRST = frozenset({"mail.send", "calendar.add", "agent.message", "process.spawn"})


def _never(text: str) -> bool:
    return False


def compiler_cases(
    world: World, rng: random.Random, held: set[str], leave_out: Callable[[str], bool] = _never
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The compiler suite's training descriptions, and why others were left out (``leave_out`` among them)."""
    words, cases, seen, dropped = _compiler_words(world), [], set(held), Counter[str]()
    for tools, mode, templates in PA.ACTIONS:
        for template, n in itertools.product(templates, range(_TEMPLATES_PER_ACTION)):
            kind = _KINDS_BY_MODE[mode][n % len(_KINDS_BY_MODE[mode])]
            text, chosen, meant = _describe(rng, _fill(rng, words, world), tools, mode, template, kind)
            read = _reading(text)
            if (read or {}).get("kind") != (meant or {}).get("kind") or (
                meant and len(meant) > 1 and read != meant
            ):
                dropped[f"{kind} read otherwise"] += 1
            elif normalised(text) in seen:
                dropped["repeated or held out"] += 1
            else:
                seen.add(normalised(text))
                cases.append(
                    {"description": text, "timezone": COMPILER_TIMEZONE, "tools": chosen, "trigger": read}
                )
    errors = _error_cases(rng, cases, seen)
    dated, left_out = _date_object_cases(world, words, seen)  # its own random, the rest unchanged
    cases, dropped = cases + dated, dropped + left_out
    rng.shuffle(cases)
    for n, case in enumerate(errors):  # spread through the file, so that the first N still hold some
        cases.insert((n * len(cases)) // len(errors), case)
    # Left out last, so that the random choices, and every other case, stay as they were.
    kept = [c for c in cases if not leave_out(str(c["description"]))]
    if len(kept) < len(cases):
        dropped["names an unseen entity"] += len(cases) - len(kept)
    return kept, dropped


def _date_object_cases(
    world: World, words: dict[str, tuple[str, ...]], seen: set[str]
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Descriptions of ``PA.DATE_OBJECT``: the date is what the task is about, so no trigger is meant."""
    rng, cases, dropped = random.Random(f"{RANDOM_SEED}:compiler-dates"), [], Counter[str]()
    for tools, templates in PA.DATE_OBJECT:
        for template, _ in itertools.product(templates, range(_DATE_OBJECT_FILLS)):
            fill = {**_fill(rng, words, world), **{s: rng.choice(w) for s, w in PA.DATE_OBJECT_WORDS.items()}}
            text = P.cap(template.format(**fill)) + ("." if rng.random() < 0.7 else "")
            if (_reading(text) or {}).get("kind") not in ("once", None):
                dropped["date as object read as a recurrence"] += 1
            elif normalised(text) in seen:
                dropped["repeated or held out"] += 1
            else:
                seen.add(normalised(text))
                case = {"description": text, "timezone": COMPILER_TIMEZONE, "tools": list(tools)}
                cases.append({**case, "trigger": None, "date_is_object": True})
    return cases, dropped


def _describe(
    rng: random.Random, fill: dict[str, str], tools: tuple[str, ...], mode: str, template: str, kind: str
) -> tuple[str, list[str], dict[str, Any] | None]:
    """A description of ``kind``'s schedule: its text, its tools and the trigger meant (None: none)."""
    chosen, action, follow = list(tools), template.format(**fill), ""
    if len(chosen) < 3 and not {"notify.owner", "mail.send"} & set(chosen) and rng.random() < 0.5:
        travel = any(t.startswith("travel.") for t in chosen)
        options = [f for f in PA.FOLLOW_UPS if mode in f[1] and (f[0] != "calendar.add" or travel)]
        tool, _, phrased = rng.choice(options)
        follow, chosen = rng.choice(phrased).format(**fill), [*chosen, tool]
    if chosen[-1] in ("shop.buy", "food.order") and rng.random() < 0.4:
        follow, chosen = f" if my wallet has more than {fill['yuan']} yuan", [*chosen, "wallet.balance"]
    meant: dict[str, Any] | None = None
    phrase = ""
    if kind == "cron":
        phrase, cron = rng.choice(PA.CRON)
        meant = {"kind": "cron", "cron": cron}
    elif kind == "interval":
        phrase, every_s = rng.choice(PA.INTERVAL)
        meant = {"kind": "interval", "every_s": every_s}
    elif kind == "once":
        phrase, meant = rng.choice(PA.ONCE), {"kind": "once"}  # the instant is the one the library reads
    if meant is None:
        text = P.cap(action + follow)
    elif rng.random() < 0.6 or len(action.split()) > 8 or tools[0] in _SCHEDULE_FIRST:
        text = f"{P.cap(phrase)}, {action}{follow}"
    else:
        text = f"{P.cap(action)} {phrase}{follow}"
    return text + ("." if rng.random() < 0.7 else ""), chosen, meant


def _error_cases(rng: random.Random, cases: list[dict[str, Any]], seen: set[str]) -> list[dict[str, Any]]:
    """Descriptions that should make no agent: empty-ish, gibberish, vague, impossible to schedule."""
    found: list[tuple[str, str, str | None]] = [(text, note, None) for text, note in PA.ERROR_DESCRIPTIONS]
    for _ in range(6):
        gibberish = " ".join(
            "".join(rng.choices(PA.GIBBERISH_SYLLABLES, k=rng.randint(1, 3)))
            for _ in range(rng.randint(2, 4))
        )
        found.append((gibberish, "nonsense", None))
    unsupported = [text for text in PA.UNSUPPORTED_SCHEDULES if _reading(text) is None]
    found += [(text, "a schedule no trigger holds", None) for text in unsupported]
    for zone in PA.UNKNOWN_ZONES:
        found.append((rng.choice(cases)["description"], "unknown time zone", zone))
    for _ in range(2):
        sentence = P.cap(rng.choice(cases)["description"].rstrip(".")) + ". "
        found.append((sentence * (2001 // len(sentence) + 1), "over 2,000 characters", None))
    errors = []
    for said, note, timezone in found:
        if timezone is None and normalised(said) in seen:  # a bad zone makes a good description an error
            continue
        seen.add(normalised(said))
        case: dict[str, Any] = {"description": said}
        if timezone:
            case["timezone"] = timezone
        errors.append({**case, "error": True, "note": note})
    return errors


def _tool_slots(world: World, rng: random.Random) -> dict[str, tuple[str, Any]]:
    """Each slot of a tool-call request as (what the request says, the argument value it states)."""
    products, place = list(world.products.values()), rng.choice(list(world.restaurants.values()))
    iso, iso2 = (f"2026-12-{day:02d}" for day in sorted(rng.sample(range(1, 29), 2)))
    shop, email, time = (
        rng.choice(list(P.SHOP_NAMES)),
        rng.choice(PA.COMPILER_WORDS["email"]),
        rng.choice(PA.TOOL_WORDS["time"]),
    )
    yuan, count = rng.choice((80, 120, 200, 300, 450, 600, 1000, 2100)), rng.randint(2, 5)
    numbers = {"stars": rng.randint(3, 5), "days": rng.randint(2, 7), "hours": rng.choice((6, 12, 24, 48))}
    a, b = rng.sample(sorted({f["from"] for f in world.flights.values()}), 2)
    base, quote = rng.sample(("USD", "EUR", "JPY", "GBP", "CNY"), 2)
    said = {
        "product": rng.choice(products)["name"],
        "sku": rng.choice(products)["sku"],
        "person": rng.choice(("bob", "carol", "alice")),
        "reason": rng.choice(("rent", "groceries", "taxi fare", "concert tickets", "dinner")),
        "dish": rng.choice(list(place["menu"])),  # with the restaurant and the city it is in
        "rid": place["id"],
        "food_city": place["city"],
        "city": rng.choice([h["city"] for h in world.hotels.values()]),
        "cuisine": rng.choice(("noodle", "Cantonese", "seafood", "salad", "Sichuan")),
        "order": f"FD-{rng.randint(1000, 9999)}",
        "flight": rng.choice(list(world.flights)),
        "hotel": rng.choice(list(world.hotels)),
        "topic": rng.choice(PA.COMPILER_WORDS["topic"]).removeprefix("the "),  # the words a query needs
        **{slot: rng.choice(PA.COMPILER_WORDS[slot]) for slot in ("message", "title")},
        **{slot: rng.choice(PA.TOOL_WORDS[slot]) for slot in ("subject", "place", "status")},
        **{"base": base, "quote": quote, "a": a, "b": b, "time": time, "day": iso, "day2": iso2},
    }
    return {
        **{slot: (value, value) for slot, value in said.items()},
        **{slot: (str(n), n) for slot, n in numbers.items()},
        "shop": (rng.choice(P.SHOP_NAMES[shop][:2]), shop),
        "yuan": (f"{yuan:,}", yuan * 100),
        "count": (P.number(rng, count), count),
        "date": (P.say_date(rng, iso), iso),
        "date2": (P.say_date(rng, iso2), iso2),
        "email": (email, [email]),
        "start": ("", f"{iso}T{time}"),  # the request says it as {time} on {day}
    }


def _offered(rng: random.Random, tool: str, catalog: list[str]) -> list[str]:
    """3 to 5 tools with ``tool`` among them, some of its own service's, in a random order."""
    size = rng.randint(3, 5)
    kin = [t for t in catalog if t != tool and t.split(".", 1)[0] == tool.split(".", 1)[0]]
    others = [t for t in catalog if t != tool and t not in kin]
    chosen = [tool, *rng.sample(kin, min(len(kin), rng.randint(1, 2)))]
    chosen += rng.sample(others, size - len(chosen))
    rng.shuffle(chosen)
    return chosen


def tool_tasks(
    world: World,
    rng: random.Random,
    held: set[str],
    catalog: list[str],
    leave_out: Callable[[str], bool] = _never,
) -> list[dict[str, Any]]:
    """The tool-calling suite's training requests, ids given; none that ``leave_out`` says to."""
    tasks, seen = [], set(held)
    for tool, template, arguments in PA.TOOL_REQUESTS:
        for _ in range(_TOOL_FILLS):
            slots = _tool_slots(world, rng)
            text = template.format(**{slot: said for slot, (said, _) in slots.items()})
            if normalised(text) in seen:
                continue
            seen.add(normalised(text))
            stated = {
                arg: slots[slot][1] if isinstance(slot, str) else slot for arg, slot in arguments.items()
            }
            expect = {"name": tool, "arguments": stated}
            tasks.append({"id": "", "input": text, "tools": _offered(rng, tool, catalog), "expect": expect})
    rng.shuffle(tasks)
    # Left out after the random choices, so that every other request stays as it was.
    tasks = [t for t in tasks if not leave_out(str(t["input"]))]
    for n, task in enumerate(tasks, 1):
        task["id"] = f"train-tools-{n:04d}"
    return tasks


def tool_task_problems(tasks: list[dict[str, Any]], catalog: list[dict[str, Any]]) -> list[str]:
    """Every way tool-calling tasks do not fit the catalog, one line each (empty: they all do)."""
    properties = {t["name"]: set(t["parameters"].get("properties", {})) for t in catalog}
    problems = []
    for task in tasks:
        tid, offered, expect = task.get("id"), task.get("tools") or [], task.get("expect") or {}
        if not task.get("input"):
            problems.append(f"{tid}: no input")
        if not 3 <= len(set(offered)) == len(offered) <= 5:
            problems.append(f"{tid}: offers {len(offered)} tools (or one twice), not 3 to 5")
        if unknown := [t for t in offered if t not in properties]:
            problems.append(f"{tid}: offers unknown tools {unknown}")
        if expect.get("name") not in offered:
            problems.append(f"{tid}: expects {expect.get('name')}, which it does not offer")
        elif unknown := sorted(set(expect.get("arguments") or {}) - properties[expect["name"]]):
            problems.append(f"{tid}: {expect['name']} takes no arguments {unknown}")
    return problems


def _record(folder: Path, name: str, made: str) -> dict[str, Any]:
    data = (folder / name).read_bytes()
    tasks = sum(1 for line in data.decode("utf-8").splitlines() if line.strip())
    return {"file": name, "tasks": tasks, "sha256": hashlib.sha256(data).hexdigest(), "made": made}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def generate(seed: Path, out: Path = SUITES) -> dict[str, Any]:
    """Write the training splits, the unseen split and ``splits.json`` into ``out``; a summary of them."""
    world, held = World.from_seed(seed), held_out_texts(SUITES)
    catalog = json.loads((SUITES / CATALOG).read_text(encoding="utf-8"))
    problems = tool_task_problems(read_jsonl(SUITES / HELD_OUT["tools"]), catalog)
    if problems:
        raise ValueError(f"{HELD_OUT['tools']} does not fit {CATALOG}:\n" + "\n".join(problems))
    unseen = choose_unseen(world, read_jsonl(SUITES / HELD_OUT["entry"]))
    mentions = unseen.mentions(world)
    entry, skipped = entry_tasks(world, random.Random(f"{RANDOM_SEED}:entry"), held, unseen)
    compiler, dropped = compiler_cases(world, random.Random(f"{RANDOM_SEED}:compiler"), held, mentions)
    names = [t["name"] for t in catalog]
    tools = tool_tasks(world, random.Random(f"{RANDOM_SEED}:tools"), held, names, mentions)
    trained = held | {normalised(t["input"]) for t in entry}  # no unseen sentence may be a training one
    fresh, _ = unseen_tasks(world, random.Random(f"{RANDOM_SEED}:unseen"), trained, unseen)
    out.mkdir(parents=True, exist_ok=True)
    for suite, rows in (("entry", entry), ("compiler", compiler), ("tools", tools)):
        _write_jsonl(out / TRAIN[suite], rows)
    _write_jsonl(out / UNSEEN["entry"], fresh)
    kinds = Counter(t["kind"] for t in entry)
    errors = sum(1 for c in compiler if c.get("error"))
    dated = sum(1 for c in compiler if c.get("date_is_object"))
    made = _made(world, kinds, errors, dated)
    splits = {
        suite: {"train": _record(out, TRAIN[suite], train), "heldout": _record(SUITES, HELD_OUT[suite], held)}
        for suite, (train, held) in made.items()
    }
    fresh_kinds = Counter(t["kind"] for t in fresh)
    splits["entry"]["unseen"] = {
        **_record(out, UNSEEN["entry"], _unseen_made(world, unseen, fresh_kinds)),
        "entities": unseen.entities(world),
    }
    text = json.dumps(splits, indent=2, ensure_ascii=False) + "\n"
    (out / "splits.json").write_text(text, encoding="utf-8")
    return {
        "entry": dict(kinds),
        "entry_left_out": dict(skipped),
        "entry_unseen": dict(fresh_kinds),
        "unseen_entities": {k: v for k, v in unseen.entities(world).items() if k in ("products", "routes")}
        | {"restaurants": [r["name"] for r in unseen.entities(world)["restaurants"]]},
        "compiler": len(compiler),
        "compiler_errors": errors,
        "compiler_date_is_object": dated,
        "compiler_left_out": dict(dropped),
        "tools": len(tools),
    }


def _unseen_made(world: World, unseen: Unseen, kinds: Counter[str]) -> str:
    """How the unseen split was made, in a sentence."""
    products = ", ".join(unseen.products)
    routes = ", ".join(f"{a}-{b}" for a, b in unseen.routes)
    places = ", ".join(
        f"{r['name']} ({r['city']}, {r['cuisine']})"
        for r in (world.restaurants[rid] for rid in unseen.restaurants)
    )
    by_kind = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    templates = len(UNSEEN_WORDING.templates())
    return (
        f"generated by aigrid.learn.generate from the services' seed, seed {RANDOM_SEED}: tasks about "
        "entities no training task of any suite mentions, chosen from the seed by sorted name, evenly "
        f"spread, none a hand-written held-out task mentions: products {products} (of those both shops "
        f"list), routes {routes} (any day), restaurant {places}; phrased with {templates} templates "
        f"of their own (aigrid.learn.phrasings UNSEEN_*), none used for training: {by_kind}; expect from "
        "aigrid.learn.world.solve on the pristine seed"
    )


def _made(world: World, kinds: Counter[str], errors: int, dated: int) -> dict[str, tuple[str, str]]:
    """How each suite's training and held-out splits were made, a sentence each."""
    held = {suite: read_jsonl(SUITES / name) for suite, name in HELD_OUT.items()}
    seed = (
        f"{len(world.products)} product listings in 2 shops, {len(world.flights)} flights, "
        f"{len(world.hotels)} hotels, {len(world.restaurants)} restaurants, {len(world.balances)} wallets"
    )
    schedules = len(PA.CRON) + len(PA.INTERVAL) + len(PA.ONCE)
    by_kind = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    held_errors = sum(1 for c in held["compiler"] if c.get("error"))
    return {
        "entry": (
            f"generated by aigrid.learn.generate from the services' seed ({seed}), seed {RANDOM_SEED}: "
            f"{by_kind}; expect from aigrid.learn.world.solve on the pristine seed",
            f"hand-written: {len(held['entry'])} sentences with their rules, expect worked out from the "
            "seed by tests/examples/entry_tasks.py",
        ),
        "compiler": (
            f"generated by aigrid.learn.generate: {schedules} schedule phrasings (or none) with "
            f"{sum(len(a[2]) for a in PA.ACTIONS)} action templates over {CATALOG} and the built-in tools, "
            f"triggers read by parse_when at {COMPILER_NOW.isoformat()} ({COMPILER_TIMEZONE}), {errors} "
            f"meant to make no agent; and {dated} of dates as the task's object, no schedule "
            f"({sum(len(t) for _, t in PA.DATE_OBJECT)} templates, trigger none though parse_when may read "
            f"a one-time one, marked date_is_object), seed {RANDOM_SEED}",
            f"hand-written: {len(held['compiler'])} agent descriptions with the tools and trigger a careful "
            f"person expects, {held_errors} meant to make no agent",
        ),
        "tools": (
            f"generated by aigrid.learn.generate: {len(PA.TOOL_REQUESTS)} request templates over {CATALOG} "
            f"filled from the services' seed, 3 to 5 tools offered each, seed {RANDOM_SEED}",
            f"hand-written: {len(held['tools'])} natural requests, 3 to 5 tools offered each, with the "
            "arguments they state plainly",
        ),
    }


def default_seed() -> Path:
    """The services' seed folder: ``$AIGRID_SHARED/fixtures/services``, else ``../shared`` beside the repo."""
    root = Path(__file__).resolve().parents[3]
    return Path(os.environ.get("AIGRID_SHARED", root.parent / "shared")) / "fixtures" / "services"


def main() -> None:
    """``python -m aigrid.learn.generate [SEED_DIR]``: write the training splits and print a summary."""
    seed = Path(sys.argv[1]) if len(sys.argv) > 1 else default_seed()
    summary = generate(seed)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
