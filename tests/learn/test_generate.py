"""The training splits of ``aigrid.learn.generate``: reproducible, apart from the held-out ones, and right."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aigrid.kernel.when import parse_when
from aigrid.learn import generate as gen
from aigrid.learn import generate_compiler, generate_entry, generate_tools
from aigrid.learn.world import STEP_KINDS, World, solve
from aigrid.spec import CronTrigger, IntervalTrigger, OnceTrigger

ROOT = Path(__file__).resolve().parents[2]
SEED = Path(os.environ.get("AIGRID_SHARED", ROOT.parent / "shared")) / "fixtures" / "services"
GENERATED = [*gen.TRAIN.values(), *gen.UNSEEN.values(), "splits.json"]


@pytest.fixture(scope="module")
def seed() -> Path:
    if not (SEED / "shops.json").exists():
        pytest.skip(f"the services' seed is not here: {SEED} (set AIGRID_SHARED)")
    return SEED


@pytest.fixture(scope="module")
def regenerated(seed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("suites")
    gen.generate(seed, out)
    return out


def train(suite: str) -> list[dict[str, Any]]:
    return gen.read_jsonl(gen.SUITES / gen.TRAIN[suite])


def reading(text: str) -> dict[str, Any] | None:
    """The trigger parse_when reads, in the suites' form."""
    when = parse_when(text, generate_compiler.COMPILER_NOW, generate_compiler.COMPILER_TIMEZONE)
    if when is None:
        return None
    trigger = when.trigger
    if isinstance(trigger, CronTrigger):
        return {"kind": "cron", "cron": trigger.cron}
    if isinstance(trigger, IntervalTrigger):
        return {"kind": "interval", "every_s": trigger.every_s}
    assert isinstance(trigger, OnceTrigger)
    return {"kind": "once", "at": trigger.at.isoformat()}


def catalog() -> list[dict[str, Any]]:
    return list(json.loads((gen.SUITES / gen.CATALOG).read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", GENERATED)
def test_the_generator_makes_the_committed_files_again(regenerated: Path, name: str) -> None:
    assert (regenerated / name).read_bytes() == (gen.SUITES / name).read_bytes(), (
        f"{name} differs from what `python -m aigrid.learn.generate` makes now: run it and commit"
    )


def test_no_training_text_repeats_a_held_out_one() -> None:
    held = gen.held_out_texts()
    assert len(held) > 100  # all three held-out files were read
    for suite, key in (("entry", "input"), ("compiler", "description"), ("tools", "input")):
        repeated = [t[key] for t in train(suite) if gen.normalised(t[key]) in held]
        assert not repeated, f"{suite}: {repeated[:5]}"
        # An unknown time zone makes a training sentence an error case: the same words, on purpose.
        texts = [gen.normalised(t[key]) for t in train(suite) if not (t.get("error") and "timezone" in t)]
        assert len(texts) == len(set(texts)), f"{suite}: a training text appears twice"


def test_entry_tasks_expect_what_the_seed_gives(seed: Path) -> None:
    world, tasks = World.from_seed(seed), train("entry")
    held_keys = list(gen.read_jsonl(gen.SUITES / gen.HELD_OUT["entry"])[0])
    assert 600 <= len(tasks) <= 1000
    assert [t["id"] for t in tasks] == [f"train-entry-{n:04d}" for n in range(1, len(tasks) + 1)]
    for task in tasks:
        outcome = solve(world, task["rule"], task["user"])  # a tie would raise TaskError
        want = {"impossible": "impossible", "insufficient": "insufficient"}.get(task["kind"], "ok")
        assert outcome.status == want, task
        assert task["expect"] == (outcome.purchases if task["kind"] in STEP_KINDS else []), task
        if task["kind"] == "info":
            assert task["answer"] == outcome.purchases, task
        assert set(task) == set(held_keys) | ({"answer"} if task["kind"] == "info" else set()), task
        assert task["user"] in world.balances
        assert not any("stars" in step for step in task["rule"]), task
    assert {t["kind"] for t in tasks} == {"purchase", "booking", "food", "impossible", "insufficient", "info"}


def test_entry_tasks_cover_every_product_route_hotel_city_and_restaurant_but_the_unseen(seed: Path) -> None:
    world, tasks = World.from_seed(seed), train("entry")
    unseen = generate_entry.choose_unseen(world, gen.read_jsonl(gen.SUITES / gen.HELD_OUT["entry"]))
    steps = [step for t in tasks if t["kind"] in STEP_KINDS for step in t["rule"]]
    bought = {s["buy"] for s in steps if "buy" in s}
    in_stock = {p["name"] for p in world.products.values() if p["stock"] > 0}
    assert bought == in_stock - set(unseen.products)
    flown = {tuple(s["flight"]) for s in steps if "flight" in s}
    open_routes = {(f["from"], f["to"], f["depart"][:10]) for f in world.flights.values() if f["seats"] > 0}
    assert flown == {r for r in open_routes if r[:2] not in unseen.routes}
    assert {s["hotel"] for s in steps if "hotel" in s} == {h["city"] for h in world.hotels.values()}
    ordered = {p["item"] for t in tasks if t["kind"] == "food" for p in t["expect"]}
    assert ordered == {r["id"] for r in world.restaurants.values() if r["open"]} - set(unseen.restaurants)


def test_compiler_triggers_are_what_parse_when_reads() -> None:
    cases = train("compiler")
    tools = {t["name"] for t in catalog()} | set(generate_compiler.BUILT_INS)
    errors = [c for c in cases if c.get("error")]
    assert 450 <= len(cases) <= 700
    assert 0.03 <= len(errors) / len(cases) <= 0.08
    for case in cases:
        if case.get("error"):
            assert case["note"], case
            continue
        assert case["timezone"] == generate_compiler.COMPILER_TIMEZONE
        if not case.get("date_is_object"):  # the one family whose trigger is not the library's reading
            assert reading(case["description"]) == case["trigger"], case
        assert 1 <= len(case["tools"]) <= 3 and set(case["tools"]) <= tools, case
    kinds = {(c.get("trigger") or {}).get("kind") for c in cases if not c.get("error")}
    assert kinds == {"cron", "interval", "once", None}


def test_compiler_dates_as_the_task_object_mean_no_trigger() -> None:
    cases = train("compiler")
    dated = [c for c in cases if c.get("date_is_object")]
    assert 60 <= len(dated) <= 100
    assert all(c.get("date_is_object") in (None, True) for c in cases)
    readings = []
    for case in dated:
        assert not case.get("error") and case["trigger"] is None, case
        read = reading(case["description"])
        assert read is None or read["kind"] == "once", case  # a recurrence would be a schedule after all
        readings.append(read)
    # The point of the family: mostly sentences the time library reads a one-time trigger in.
    assert sum(r is not None for r in readings) >= 0.75 * len(dated)
    assert len({c["description"].split()[0] for c in dated}) >= 8  # varied wordings, not one template
    assert {t for c in dated for t in c["tools"]} >= {
        "travel.flights",
        "travel.book",
        "travel.hotels",
        "calendar.add",
        "calendar.events",
        "weather.forecast",
        "mail.send",
    }


def test_tool_tasks_name_tools_and_arguments_of_the_catalog() -> None:
    tools = catalog()
    schemas = {t["name"]: t["parameters"] for t in tools}
    heldout = gen.read_jsonl(gen.SUITES / gen.HELD_OUT["tools"])
    assert 25 <= len(heldout) <= 40 and 150 <= len(train("tools")) <= 300
    for tasks in (heldout, train("tools")):
        assert generate_tools.tool_task_problems(tasks, tools) == []
        assert len({t["id"] for t in tasks}) == len(tasks)
        for task in tasks:
            expect = task["expect"]
            # The stated values have the types the tool's parameters say (required ones may be left out).
            schema = {**schemas[expect["name"]], "required": []}
            jsonschema.validate(expect["arguments"], schema)


def test_tool_task_problems_says_what_is_wrong() -> None:
    bad = {"id": "t", "input": "x", "tools": ["shop.search", "nope.tool"], "expect": {"name": "fx.rate"}}
    wrong_argument = {
        "id": "u",
        "input": "x",
        "tools": ["fx.rate", "shop.search", "shop.buy"],
        "expect": {"name": "fx.rate", "arguments": {"currency": "USD"}},
    }
    problems = generate_tools.tool_task_problems([bad, wrong_argument], catalog())
    assert any("not 3 to 5" in p for p in problems)
    assert any("unknown tools ['nope.tool']" in p for p in problems)
    assert any("does not offer" in p for p in problems)
    assert any("takes no arguments ['currency']" in p for p in problems)


def test_splits_record_every_file_as_it_is() -> None:
    splits = json.loads((gen.SUITES / "splits.json").read_text(encoding="utf-8"))
    assert set(splits) == {"entry", "compiler", "tools"}
    files = {"train": gen.TRAIN, "heldout": gen.HELD_OUT, "unseen": gen.UNSEEN}
    for suite, record in splits.items():
        assert set(record) == ({"train", "heldout", "unseen"} if suite == "entry" else {"train", "heldout"})
        for split, entry in record.items():
            assert entry["file"] == files[split][suite]
            data = (gen.SUITES / entry["file"]).read_bytes()
            assert entry["sha256"] == hashlib.sha256(data).hexdigest(), f"{suite} {split}"
            assert entry["tasks"] == len(gen.read_jsonl(gen.SUITES / entry["file"]))
            assert entry["made"].startswith("hand-written" if split == "heldout" else "generated by")
    assert set(splits["entry"]["unseen"]) == {"file", "tasks", "sha256", "made", "entities"}
