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
- ``entry_unseen.jsonl``: the entry suite's entity-disjoint split. ``generate_entry.choose_unseen``
  picks, from the seed alone (sorted names, every k-th), about 15% of the products (among those
  both shops list), 3 flight routes (origin and destination, any day) and a restaurant (the one
  open place of its city and cuisine), none of which a hand-written held-out task mentions. No
  training task of any suite names them (its rule or its text; ``Unseen.in_rule`` and
  ``aigrid.learn.suites.held_out``), and the unseen split is made of them alone, phrased with
  ``phrasings``' ``UNSEEN_*`` templates, which nothing else uses, ``expect`` again from ``solve``.
- ``splits.json``: every split's file, size, SHA-256 and how it was made, and the unseen entities.

The held-out files are read only so that no training text equals a held-out one (lower case, words
only) and so that no unseen entity is one they mention. A fixed random seed makes the files the same
on every run. Each suite's tasks are made in a module of their own: ``generate_entry`` (the entry
suite's training and unseen splits), ``generate_compiler`` and ``generate_tools``; this one writes
the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from aigrid.learn import phrasings_agents as PA
from aigrid.learn.generate_common import RANDOM_SEED
from aigrid.learn.generate_compiler import COMPILER_NOW, COMPILER_TIMEZONE, compiler_cases
from aigrid.learn.generate_entry import UNSEEN_WORDING, Unseen, choose_unseen, entry_tasks, unseen_tasks
from aigrid.learn.generate_tools import tool_task_problems, tool_tasks
from aigrid.learn.suites import normalised
from aigrid.learn.world import World

SUITES = Path(__file__).resolve().parent / "suites"
HELD_OUT = {
    "entry": "entry_heldout.jsonl",
    "compiler": "compiler_heldout.jsonl",
    "tools": "tools_heldout.jsonl",
}
TRAIN = {"entry": "entry_train.jsonl", "compiler": "compiler_train.jsonl", "tools": "tools_train.jsonl"}
UNSEEN = {"entry": "entry_unseen.jsonl"}
CATALOG = "compiler_tools.json"


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
