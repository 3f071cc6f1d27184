"""bench/entry_state.py against the five example services, and the super-entry task file against the seed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from bench.entry_state import (
    USERS,
    Purchase,
    State,
    Wallet,
    canonical,
    invariant,
    new_since,
    score,
    seed_balances,
    snapshot,
    snapshot_async,
)
from tests.examples.entry_tasks import KINDS, TASKS, World, check_tasks, load_tasks
from tests.examples.test_services import SEED, Service, Session, connect, key, running_services

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    with running_services(tmp_path_factory.mktemp("entry-state")) as running:
        yield running


@pytest.fixture
def urls(services: dict[str, Service]) -> dict[str, str]:
    return {name: service.url for name, service in services.items()}


def task(task_id: str) -> dict[str, Any]:
    return next(t for t in load_tasks() if t["id"] == task_id)


async def paid(pay: Session, user: str, amount_cents: int) -> str:
    return str(
        (await pay.ok("authorise", user=user, amount_cents=amount_cents, idempotency_key=key()))["payment_id"]
    )


async def capture(pay: Session, payment_id: str) -> None:
    await pay.ok("capture", payment_id=payment_id, idempotency_key=key())


def about(violations: list[str], *needles: str) -> list[str]:
    """The violations that mention every needle."""
    return [v for v in violations if all(n in v for n in needles)]


async def test_purchases_made_by_hand_score_as_their_tasks_and_keep_the_invariant(
    services: dict[str, Service], urls: dict[str, str]
) -> None:
    start = await snapshot_async(urls)
    assert invariant(start) == []
    assert start.records == () and start.payments == ()
    assert {u: w.balance_cents for u, w in start.wallets.items()} == seed_balances(SEED)

    # shop-power-banks-five: five Pebble 10000mAh from northwind (lakeside has only four).
    power_banks = task("shop-power-banks-five")
    async with connect(services["payment"]) as pay, connect(services["northwind"]) as shop:
        payment_id = await paid(pay, "alice", 5 * 12900)
        await shop.ok("create_order", sku="NW-1003", quantity=5, payment_id=payment_id, idempotency_key=key())
        await capture(pay, payment_id)
    after_shop = await snapshot_async(urls, previous=start)
    assert new_since(start, after_shop).created == power_banks["expect"]
    assert score(power_banks, start, after_shop).passed, score(power_banks, start, after_shop).reason
    assert invariant(after_shop) == []

    # The same change scored against other tasks fails, and says why.
    earbuds = score(task("shop-cheapest-earbuds"), start, after_shop)
    assert not earbuds.passed
    assert (
        "missing lakeside:LS-2000" in earbuds.reason and "unexpected northwind:NW-1003 x5" in earbuds.reason
    )
    nothing = score(task("impossible-no-such-product"), start, after_shop)
    assert not nothing.passed and "money moved for alice: balance 2000000" in nothing.reason
    wrong_user = score({**power_banks, "user": "bob"}, start, after_shop)
    assert not wrong_user.passed and "alice's payment" in wrong_user.reason

    # trip-hangzhou-shenzhen: a flight and a two-night hotel, two bookings with two payments.
    trip = task("trip-hangzhou-shenzhen")
    async with connect(services["payment"]) as pay, connect(services["travel"]) as travel:
        flight = await paid(pay, "alice", 52000)
        hotel = await paid(pay, "alice", 2 * 32000)
        await travel.ok("book", kind="flight", item_id="FL100", payment_id=flight, idempotency_key=key())
        await travel.ok(
            "book", kind="hotel", item_id="HT010", nights=2, payment_id=hotel, idempotency_key=key()
        )
        mid_trip = await snapshot_async(urls, previous=after_shop)
        assert score(trip, after_shop, mid_trip).passed, "the bookings are right before the capture"
        assert len(about(invariant(mid_trip), "is still authorised")) == 2
        await capture(pay, flight)
        await capture(pay, hotel)
    after_trip = await snapshot_async(urls, previous=after_shop)
    assert score(trip, after_shop, after_trip).passed
    assert not score(trip, start, after_trip).passed, "the power banks are not part of the trip"
    assert invariant(after_trip) == []

    # food-dim-sum: one food order; lines in another order and split in two still match.
    dim_sum = task("food-dim-sum")
    async with connect(services["payment"]) as pay, connect(services["food"]) as food:
        payment_id = await paid(pay, "alice", 2 * 2400 + 3 * 1800 + 500)
        lines = [
            {"item": "Egg Tarts", "quantity": 1},
            {"item": "BBQ Pork Buns", "quantity": 2},
            {"item": "Egg Tarts", "quantity": 2},
        ]
        await food.ok("order", restaurant_id="R03", items=lines, payment_id=payment_id, idempotency_key=key())
        await capture(pay, payment_id)
    # The synchronous form runs its own event loop, so here it goes to a thread.
    after_food = await asyncio.to_thread(snapshot, urls, USERS, after_trip)
    created = new_since(after_trip, after_food).created
    assert [canonical(p) for p in created] == [canonical(p) for p in dim_sum["expect"]]
    result = score(dim_sum, after_trip, after_food)
    assert result.passed and "R03" in result.reason
    assert invariant(after_food) == []
    spent = 5 * 12900 + 52000 + 64000 + 10700
    assert after_food.wallets["alice"] == Wallet(2000000 - spent, 0)


async def test_each_broken_rule_is_one_readable_violation(
    services: dict[str, Service], urls: dict[str, str]
) -> None:
    clean = await snapshot_async(urls)
    assert invariant(clean) == []
    async with (
        connect(services["payment"]) as pay,
        connect(services["lakeside"]) as shop,
        connect(services["food"]) as food,
    ):
        # An order paid by a payment that is only authorised.
        held = await paid(pay, "carol", 3900)
        held_order = await shop.ok(
            "create_order", sku="LS-2013", quantity=1, payment_id=held, idempotency_key=key()
        )
        # Money captured with no order.
        orphan = await paid(pay, "carol", 5900)
        await capture(pay, orphan)
        # An order cancelled while its payment stays captured.
        kept = await paid(pay, "alice", 3100)
        meal = await food.ok(
            "order",
            restaurant_id="R02",
            items=[{"item": "Beef Noodle Soup", "quantity": 1}],
            payment_id=kept,
            idempotency_key=key(),
        )
        await capture(pay, kept)
        placed = await snapshot_async(urls, previous=clean)
        await food.ok("cancel_order", order_id=meal["order_id"], idempotency_key=key())
        broken = await snapshot_async(urls, previous=placed)

        violations = invariant(broken)
        assert about(violations, held_order["order_id"], held, "which is authorised") != []
        assert about(violations, f"payment {held} (carol, 3900 cents) is still authorised") != []
        assert (
            about(violations, f"captured payment {orphan} (carol, 5900 cents) pays for no live order") != []
        )
        assert about(violations, f"captured payment {kept} (alice, 3100 cents) pays for no live order") != []
        assert len(violations) == 4, violations
        assert all(isinstance(v, str) and "\n" not in v for v in violations)

        # The cancelled meal shows as gone between the snapshots, and fails any task.
        gone = new_since(placed, broken)
        assert [r.id for r in gone.vanished] == [meal["order_id"]] and gone.created == []
        verdict = score({"id": "t", "user": "alice", "expect": []}, placed, broken)
        assert not verdict.passed and "cancelled what an earlier task bought" in verdict.reason

        # A balance that is not the seed's minus the captured payments, on a doctored state.
        doctored = dataclasses.replace(broken, wallets={**broken.wallets, "bob": Wallet(7000, 0)})
        assert about(invariant(doctored), "bob's balance is 7000 cents, but the seed's 8000 minus 0") != []
        assert about(invariant(broken, seed={**seed_balances(SEED), "carol": 1}), "carol's balance") != []

        # One payment for two orders, and an amount that does not match.
        twice = await paid(pay, "alice", 3900)
        first = await shop.ok(
            "create_order", sku="LS-2013", quantity=1, payment_id=twice, idempotency_key=key()
        )
        second = await shop.ok(
            "create_order", sku="LS-2014", quantity=1, payment_id=twice, idempotency_key=key()
        )
        await capture(pay, twice)
        doubled = invariant(await snapshot_async(urls, previous=broken))
        assert about(doubled, f"payment {twice} pays for 2 live orders or bookings", first["order_id"]) != []
        assert (
            about(doubled, second["order_id"], "5900 cents", f"paid by payment {twice} of 3900 cents") != []
        )

        # Put it right: cancel the orders, release the hold, refund what was taken.
        for order in (held_order, first, second):
            await shop.ok("cancel_order", order_id=order["order_id"], idempotency_key=key())
        await pay.ok("void", payment_id=held, idempotency_key=key())
        for payment_id in (orphan, kept, twice):
            await pay.ok("refund", payment_id=payment_id, idempotency_key=key())
    repaired = await snapshot_async(urls, previous=broken)
    assert invariant(repaired) == []
    assert repaired.wallets == clean.wallets


def test_a_state_with_nothing_in_it_holds() -> None:
    empty = State(records=(), payments=(), wallets={u: Wallet(b, 0) for u, b in seed_balances(SEED).items()})
    assert invariant(empty) == []
    assert score({"id": "t", "user": "alice", "expect": []}, empty, empty).passed


def test_the_task_file_agrees_with_the_seed() -> None:
    lines = TASKS.read_text(encoding="utf-8").splitlines()
    tasks = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(t, dict) for t in tasks)
    ids = [t["id"] for t in tasks]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    assert len(tasks) >= 36
    assert sum(t["expect"] == [] for t in tasks) >= 8
    kinds = Counter(t["kind"] for t in tasks)
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 4, kinds
    balances = seed_balances(SEED)
    world = World.from_seed(SEED)
    for t in tasks:
        assert set(t) >= {"id", "input", "user", "kind", "expect", "rule"}, t["id"]
        assert t["user"] in balances and t["kind"] in KINDS and len(t["input"]) > 20, t["id"]
        assert (t["expect"] == []) == (t["kind"] in ("impossible", "insufficient", "info")), t["id"]
        for p in t["expect"]:
            assert_exists(world, p)
    # Each expectation is what the seed implies, whatever earlier tasks bought.
    assert check_tasks(tasks, SEED) == []


def test_the_task_check_catches_wrong_and_fragile_expectations() -> None:
    tasks = load_tasks()
    shoes = next(i for i, t in enumerate(tasks) if t["id"] == "shop-running-shoes-42")
    wrong = [dict(t) for t in tasks]
    wrong[shoes]["expect"] = [{"service": "lakeside", "item": "LS-2017", "quantity": 1}]
    assert [p for p in check_tasks(wrong, SEED) if p.startswith("shop-running-shoes-42: expect")] != []

    # An earlier task that takes three of lakeside's four backpacks leaves too few for a later one.
    greedy = {
        "id": "greedy",
        "input": "Buy three Atlas Travel Backpacks 30L from Lakeside.",
        "user": "alice",
        "kind": "purchase",
        "expect": [{"service": "lakeside", "item": "LS-2024", "quantity": 3}],
        "rule": [{"buy": "Atlas Travel Backpack 30L", "quantity": 3, "shop": "lakeside"}],
    }
    two = {
        **greedy,
        "id": "two-backpacks",
        "expect": [{"service": "lakeside", "item": "LS-2024", "quantity": 2}],
        "rule": [{"buy": "Atlas Travel Backpack 30L", "quantity": 2}],
    }
    problems = check_tasks([greedy, two], SEED)
    assert len(problems) == 2 and "two-backpacks: earlier tasks change it" in problems[0], problems

    tie = {
        **greedy,
        "id": "tie",
        "rule": [{"flight": ["Hangzhou", "Shanghai", "2026-12-06"], "pick": "cheapest"}],
    }
    assert "a tie between FL115 and FL116" in check_tasks([tie], SEED)[0]


def assert_exists(world: World, p: Purchase | dict[str, Any]) -> None:
    """The purchase names a product, flight, hotel or restaurant and dishes the seed has."""
    if p["service"] in ("northwind", "lakeside"):
        product = world.products[(p["service"], p["item"])]
        assert 1 <= p["quantity"] <= product["stock"], p
    elif p["service"] == "travel":
        assert p["quantity"] == 1, p
        if "nights" in p:
            assert world.hotels[p["item"]]["rooms"] >= 1 and p["nights"] >= 1, p
        else:
            assert world.flights[p["item"]]["seats"] >= 1, p
    else:
        assert p["service"] == "food" and p["quantity"] == 1, p
        place = world.restaurants[p["item"]]
        assert place["open"] and p["items"], p
        assert all(line["item"] in place["menu"] and line["quantity"] >= 1 for line in p["items"]), p
