"""The tool-calling suite's generated requests, and the check that tool-calling tasks fit the catalog."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from aigrid.learn import phrasings as P
from aigrid.learn import phrasings_agents as PA
from aigrid.learn.generate_common import never
from aigrid.learn.suites import normalised
from aigrid.learn.world import World

_TOOL_FILLS = 6  # requests made per tool-call template


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
    leave_out: Callable[[str], bool] = never,
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
