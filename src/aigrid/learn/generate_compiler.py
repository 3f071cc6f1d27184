"""The compiler suite's generated cases: agent descriptions with the tools and trigger each means."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aigrid.kernel.when import parse_when
from aigrid.learn import phrasings as P
from aigrid.learn import phrasings_agents as PA
from aigrid.learn.generate_common import RANDOM_SEED, never
from aigrid.learn.suites import normalised
from aigrid.learn.world import World
from aigrid.spec import CronTrigger, IntervalTrigger, OnceTrigger

COMPILER_NOW = datetime.fromisoformat("2026-11-23T10:00:00+08:00")  # a Monday, as the held-out cases
COMPILER_TIMEZONE = "Asia/Shanghai"
BUILT_INS = ("time.now", "notify.owner", "agent.message", "process.spawn")
_TEMPLATES_PER_ACTION = 7  # descriptions tried per action template (some readings are dropped)
_DATE_OBJECT_FILLS = 3  # descriptions tried per template of dates as the task's object


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


def compiler_cases(
    world: World, rng: random.Random, held: set[str], leave_out: Callable[[str], bool] = never
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
