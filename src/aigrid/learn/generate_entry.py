"""The entry suite's generated tasks: the training split, the unseen entities and the unseen split."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aigrid.learn import phrasings as P
from aigrid.learn.suites import Mentions, normalised
from aigrid.learn.world import STEP_KINDS, TaskError, World, solve

_WANT_STATUS = {"impossible": "impossible", "insufficient": "insufficient"}  # every other kind: ok
# How many entities of each sort the unseen split is about: about 15% of the product names, so
# that training still covers most of the catalog, and a few routes and restaurants.
UNSEEN_PRODUCT_SHARE = 0.15
UNSEEN_ROUTES = 3
UNSEEN_RESTAURANTS = 1


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
