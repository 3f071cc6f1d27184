"""The entry suite's entity-disjoint ``unseen`` split, and ``held_out``, which keeps it from training."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aigrid.learn import generate as gen
from aigrid.learn import generate_entry
from aigrid.learn import suites as S
from aigrid.learn.evals import EvalService
from aigrid.learn.world import STEP_KINDS, World, solve

ROOT = Path(__file__).resolve().parents[2]
SEED = Path(os.environ.get("AIGRID_SHARED", ROOT.parent / "shared")) / "fixtures" / "services"


@pytest.fixture(scope="module")
def world() -> World:
    if not (SEED / "shops.json").exists():
        pytest.skip(f"the services' seed is not here: {SEED} (set AIGRID_SHARED)")
    return World.from_seed(SEED)


@pytest.fixture(scope="module")
def unseen(world: World) -> generate_entry.Unseen:
    return generate_entry.choose_unseen(world, heldout())


def heldout() -> list[dict[str, Any]]:
    return gen.read_jsonl(gen.SUITES / gen.HELD_OUT["entry"])


def unseen_tasks() -> list[dict[str, Any]]:
    return gen.read_jsonl(gen.SUITES / gen.UNSEEN["entry"])


def training_texts() -> list[str]:
    """Every training text of every suite."""
    return [
        str(t.get("input") or t.get("description") or "")
        for name in gen.TRAIN.values()
        for t in gen.read_jsonl(gen.SUITES / name)
    ]


def test_the_unseen_entities_are_a_fixed_choice_the_record_keeps(
    world: World, unseen: generate_entry.Unseen
) -> None:
    names = {p["name"] for p in world.products.values()}
    assert 3 <= len(unseen.products) <= 0.2 * len(names)
    assert len(unseen.routes) == 3 and 1 <= len(unseen.restaurants) <= 2
    shops = {shop for shop, _ in world.products}
    for name in unseen.products:  # both shops list it, so buying it is still a choice between them
        assert {s for (s, _), p in world.products.items() if p["name"] == name} == shops
    assert generate_entry.choose_unseen(world, heldout()) == unseen  # nothing random: the seed decides
    assert S.suite("entry").record["unseen"]["entities"] == unseen.entities(world)


def test_no_hand_written_held_out_task_mentions_an_unseen_entity(
    world: World, unseen: generate_entry.Unseen
) -> None:
    mentions = unseen.mentions(world)
    for task in heldout():
        assert not unseen.in_rule(world, task["rule"]), task["id"]
        assert not mentions(task["input"]), task["id"]


def test_no_training_task_mentions_an_unseen_entity(world: World, unseen: generate_entry.Unseen) -> None:
    for task in gen.read_jsonl(gen.SUITES / gen.TRAIN["entry"]):
        assert not unseen.in_rule(world, task["rule"]), task
    named = [text for text in training_texts() if unseen.mentions(world)(text)]
    assert not named, named[:5]


def test_unseen_tasks_are_about_unseen_entities_only(world: World, unseen: generate_entry.Unseen) -> None:
    tasks = unseen_tasks()
    bought, flown, fed = set(), set(), set()
    for task in tasks:
        steps = task["rule"]
        assert unseen.in_rule(world, steps), task
        for step in steps:
            if "buy" in step:
                assert step["buy"] in unseen.products, task
                bought.add(step["buy"])
            elif "flight" in step:
                assert tuple(step["flight"][:2]) in unseen.routes, task
                flown.add(tuple(step["flight"][:2]))
            elif "food" in step:
                places = generate_entry._food_places(world, step)
                assert places and places <= set(unseen.restaurants), task
                fed |= places
            else:  # a hotel, only after an unseen flight (hotels are no unseen entity)
                assert "hotel" in step and any("flight" in s for s in steps), task
    assert (bought, flown, fed) == (set(unseen.products), set(unseen.routes), set(unseen.restaurants))


def test_unseen_tasks_expect_what_the_seed_gives_in_the_held_out_format(world: World) -> None:
    tasks = unseen_tasks()
    assert 40 <= len(tasks) <= 60
    assert [t["id"] for t in tasks] == [f"unseen-entry-{n:04d}" for n in range(1, len(tasks) + 1)]
    keys = set(heldout()[0])
    for task in tasks:
        outcome = solve(world, task["rule"], task["user"])
        want = {"impossible": "impossible", "insufficient": "insufficient"}.get(task["kind"], "ok")
        assert outcome.status == want, task
        assert task["expect"] == (outcome.purchases if task["kind"] in STEP_KINDS else []), task
        assert set(task) == keys | ({"answer"} if task["kind"] == "info" else set()), task
        if task["kind"] == "info":
            assert task["answer"] == outcome.purchases, task


def test_unseen_kinds_are_in_about_the_held_out_proportions() -> None:
    mine, theirs = Counter(t["kind"] for t in unseen_tasks()), Counter(t["kind"] for t in heldout())
    assert set(mine) == set(theirs) == {"purchase", "booking", "food", "info", "impossible", "insufficient"}
    for kind in theirs:
        share, wanted = mine[kind] / mine.total(), theirs[kind] / theirs.total()
        assert abs(share - wanted) <= 0.06, (kind, share, wanted)


def test_unseen_sentences_are_new_and_their_templates_are_their_own() -> None:
    trained = {gen.normalised(t) for t in training_texts()}
    held = gen.held_out_texts()
    texts = [gen.normalised(t["input"]) for t in unseen_tasks()]
    assert len(set(texts)) == len(texts)
    assert not set(texts) & trained and not set(texts) & held
    mine, theirs = generate_entry.UNSEEN_WORDING, generate_entry.TRAINING_WORDING
    assert not {gen.normalised(t) for t in mine.templates()} & {gen.normalised(t) for t in theirs.templates()}
    assert not set(mine.cheap) & set(theirs.cheap)


def test_held_out_says_which_sentences_must_never_be_learned_from() -> None:
    assert S.held_out(heldout()[0]["input"])
    assert S.held_out(unseen_tasks()[0]["input"])
    assert S.held_out("  " + heldout()[1]["input"].upper() + "!!")  # the same words, however written
    compiler_heldout = gen.read_jsonl(gen.SUITES / gen.HELD_OUT["compiler"])
    assert S.held_out(next(c["description"] for c in compiler_heldout if c["description"]))
    products = S.suite("entry").record["unseen"]["entities"]["products"]
    assert S.held_out(f"my friend says the {products[0].lower()} is great, what do you think?")
    assert S.held_out("Which salad place in Hangzhou delivers fastest?")
    assert S.held_out("I'd like to fly Beijing to Hangzhou next week.")
    assert not S.held_out(gen.read_jsonl(gen.SUITES / gen.TRAIN["entry"])[0]["input"])
    assert not S.held_out("Order a Cucumber Salad from the nearest noodle place in Hangzhou.")
    assert not S.held_out("Book the cheapest flight from Hangzhou to Beijing on 2026-12-07.")


def test_held_out_is_false_for_every_training_text() -> None:
    caught = [text for text in training_texts() if S.held_out(text)]
    assert not caught, caught[:5]


def test_only_the_entry_suite_lists_an_unseen_split() -> None:
    assert S.SPLITS == ("train", "heldout", "unseen")
    listed = {name: s.to_json()["splits"] for name, s in S.SUITES.items()}
    assert set(listed["entry"]) == {"train", "heldout", "unseen"}
    assert listed["entry"]["unseen"]["tasks"] == len(unseen_tasks())
    assert set(listed["compiler"]) == set(listed["tools"]) == {"train", "heldout"}
    with pytest.raises(S.SuiteError) as missing:
        S.suite("compiler").tasks("unseen")
    assert missing.value.status == 409 and "no unseen split" in str(missing.value)


class _Store:
    """An eval store that keeps what it was asked to create."""

    def __init__(self) -> None:
        self.created: list[tuple[Any, ...]] = []

    def create(self, *args: Any) -> SimpleNamespace:
        self.created.append(args)
        return SimpleNamespace(id="evr-1", tenant_id=args[0], model=args[3], experience=args[4])

    def add(self, *args: Any) -> None:
        pass

    def finish(self, *args: Any) -> None:
        pass


async def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


async def _never_judges(*args: Any) -> Any:
    await asyncio.sleep(3600)


def test_an_eval_runs_the_unseen_split_and_names_the_splits_when_given_another() -> None:
    store = _Store()
    service = EvalService(store, _call, {"entry": _never_judges}, {"entry": "m"})  # type: ignore[arg-type]

    async def go() -> None:
        await service.start(1, "entry", "unseen", limit=5)
        with pytest.raises(S.SuiteError) as unknown:
            await service.start(1, "entry", "test")
        assert unknown.value.status == 400 and "train, heldout, unseen" in str(unknown.value)
        with pytest.raises(S.SuiteError) as missing:
            await service.start(1, "compiler", "unseen")
        assert missing.value.status == 409
        await service.close()

    asyncio.run(go())
    assert [(c[1], c[2], c[5]) for c in store.created] == [("entry", "unseen", 5)]
