"""The example services' own world (examples/services/seed): what it holds, and a bare clone runs on it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "examples" / "services"
OWN_SEED = SERVICES / "seed"
SCRIPTS = {
    "northwind": ("shop.py", "--shop", "northwind"),
    "lakeside": ("shop.py", "--shop", "lakeside"),
    "payment": ("payment.py",),
    "travel": ("travel.py",),
    "food": ("food.py",),
}
# The seed file each service reads first.
SEED_FILES = {
    "northwind": "shops.json",
    "lakeside": "shops.json",
    "payment": "wallet.json",
    "travel": "travel.json",
    "food": "food.json",
}


def own(name: str) -> Any:
    """The parsed file ``name`` of the in-repo seed."""
    return json.loads((OWN_SEED / name).read_text(encoding="utf-8"))


def shop_products(shop_id: str) -> dict[str, dict[str, Any]]:
    """The in-repo seed's products of one shop, by name."""
    shop = next(s for s in own("shops.json")["shops"] if s["id"] == shop_id)
    return {p["name"]: p for p in shop["products"]}


def distinct_ports(count: int) -> list[int]:
    """``count`` different free ports."""
    ports: list[int] = []
    while len(ports) < count:
        ports += [port for port in [free_port()] if port not in ports]
    return ports


def clean_env() -> dict[str, str]:
    """This environment without AIGRID_SHARED, as a newcomer's shell has it."""
    env = {k: v for k, v in os.environ.items() if k != "AIGRID_SHARED"}
    return env | {"PYTHONDONTWRITEBYTECODE": "1"}


def assert_keys(row: dict[str, Any], types: dict[str, type]) -> None:
    """``row`` has exactly the keys of ``types``, each value of exactly its type."""
    assert set(row) == set(types), row
    for key, kind in types.items():
        assert type(row[key]) is kind, (key, row)


def test_the_own_seed_has_the_shared_format() -> None:
    product = {"sku": str, "name": str, "brand": str, "category": str, "price_cents": int, "stock": int}
    shops = own("shops.json")
    assert set(shops) == {"shops"}
    assert [s["id"] for s in shops["shops"]] == ["northwind", "lakeside"], "run.py starts these two"
    for shop in shops["shops"]:
        assert_keys(shop, {"id": str, "name": str, "products": list})
        for row in shop["products"]:
            assert_keys(row, product)
    travel = own("travel.json")
    assert set(travel) == {"flights", "hotels"}
    flight = {"id": str, "airline": str, "from": str, "to": str, "depart": str, "arrive": str}
    for row in travel["flights"]:
        assert_keys(row, flight | {"price_cents": int, "seats": int})
        depart, arrive = datetime.fromisoformat(row["depart"]), datetime.fromisoformat(row["arrive"])
        assert depart.utcoffset() == arrive.utcoffset() == timedelta(hours=8), row
        assert depart < arrive, row
    hotel = {"id": str, "city": str, "name": str, "stars": int, "price_per_night_cents": int, "rooms": int}
    for row in travel["hotels"]:
        assert_keys(row, hotel)
    food = own("food.json")
    assert set(food) == {"restaurants", "delivery_fee_cents"} and type(food["delivery_fee_cents"]) is int
    place = {"id": str, "name": str, "city": str, "cuisine": str, "distance_km": float, "open": bool}
    for row in food["restaurants"]:
        assert_keys(row, place | {"menu": list})
        for dish in row["menu"]:
            assert_keys(dish, {"item": str, "price_cents": int})
    wallets = own("wallet.json")
    assert set(wallets) == {"wallets"}
    for row in wallets["wallets"]:
        assert_keys(row, {"user": str, "balance_cents": int, "home_city": str})
    ids = [p["sku"] for s in shops["shops"] for p in s["products"]] + [r["id"] for r in travel["flights"]]
    ids += [r["id"] for r in travel["hotels"]] + [r["id"] for r in food["restaurants"]]
    assert len(ids) == len(set(ids)), "every id once"


def test_the_shops_overlap_at_different_prices_with_gaps() -> None:
    northwind, lakeside = shop_products("northwind"), shop_products("lakeside")
    both = northwind.keys() & lakeside.keys()
    assert len(both) >= 10
    assert all(northwind[n]["price_cents"] != lakeside[n]["price_cents"] for n in both), "a choice each"
    assert northwind.keys() - lakeside.keys() and lakeside.keys() - northwind.keys(), "some in one shop"
    sold_out_here = {n for n in both if northwind[n]["stock"] == 0 and lakeside[n]["stock"] > 0}
    sold_out_there = {n for n in both if lakeside[n]["stock"] == 0 and northwind[n]["stock"] > 0}
    assert sold_out_here and sold_out_there, "out of stock in one shop, to be had in the other"
    assert 40 <= len(northwind) + len(lakeside) <= 60


def test_travel_has_sold_out_flights_and_full_hotels_over_two_days() -> None:
    travel = own("travel.json")
    flights, hotels = travel["flights"], travel["hotels"]
    assert 20 <= len(flights) <= 35 and 10 <= len(hotels) <= 15
    days = defaultdict(list)
    for flight in flights:
        days[flight["depart"][:10]].append(flight)
    assert len(days) == 2
    assert all(any(f["seats"] == 0 for f in day) for day in days.values()), "a sold-out flight each day"
    cities = {f["from"] for f in flights} | {f["to"] for f in flights}
    assert len(cities) >= 4 and {h["city"] for h in hotels} <= cities
    assert any(h["rooms"] == 0 for h in hotels) and any(h["rooms"] > 0 for h in hotels)


def test_food_has_a_closed_restaurant_and_a_delivery_fee() -> None:
    food = own("food.json")
    places = food["restaurants"]
    assert 5 <= len(places) <= 6 and len({p["city"] for p in places}) >= 2
    assert [p["open"] for p in places].count(False) == 1
    assert all(p["distance_km"] > 0 and p["menu"] for p in places)
    assert food["delivery_fee_cents"] > 0


def test_bob_has_too_little_money_for_a_flight_or_most_goods() -> None:
    wallets = {w["user"]: w for w in own("wallet.json")["wallets"]}
    assert set(wallets) == {"alice", "bob", "carol"}
    bob = wallets["bob"]["balance_cents"]
    prices = [p["price_cents"] for s in own("shops.json")["shops"] for p in s["products"]]
    assert 0 < bob < min(f["price_cents"] for f in own("travel.json")["flights"])
    assert sum(price > bob for price in prices) > 0.8 * len(prices)
    assert all(bob < w["balance_cents"] for user, w in wallets.items() if user != "bob")


async def answer(url: str, tool: str, **args: Any) -> dict[str, Any]:
    """The structured answer of one tool call over MCP streamable HTTP."""
    async with Client(url, cache=None) as client:
        result = await client.call_tool(tool, args)
    assert not result.is_error and result.structured_content is not None, result
    return dict(result.structured_content)


@pytest.fixture
def bare_clone(tmp_path: Path) -> Iterator[dict[str, str]]:
    """run.py from a copy of examples/services with nothing beside it (no ../shared) and no
    AIGRID_SHARED: each service's MCP URL once all are up; at the end SIGTERM, and run.py exits 0."""
    clone = tmp_path / "clone" / "examples" / "services"
    shutil.copytree(SERVICES, clone, ignore=shutil.ignore_patterns("__pycache__", "*.db"))
    ports = dict(zip(SCRIPTS, distinct_ports(len(SCRIPTS)), strict=True))
    argv = [sys.executable, str(clone / "run.py"), "--data-dir", str(tmp_path / "data")]
    argv += ["--ports", ",".join(map(str, ports.values()))]
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=clean_env(), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        while "services: up:" not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"run.py exited {proc.returncode}:\n{log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        yield {name: f"http://127.0.0.1:{port}/mcp" for name, port in ports.items()}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text(errors="replace")


@pytest.mark.slow
async def test_a_bare_clone_starts_every_service_on_the_own_seed(bare_clone: dict[str, str]) -> None:
    for shop in ("northwind", "lakeside"):
        found = (await answer(bare_clone[shop], "search", query=""))["results"]
        assert {p["name"] for p in found} == set(shop_products(shop)), shop
    flight = own("travel.json")["flights"][0]
    route = {"from_city": flight["from"], "to_city": flight["to"], "date": flight["depart"][:10]}
    found = await answer(bare_clone["travel"], "search_flights", **route)
    assert flight["id"] in {f["id"] for f in found["flights"]}
    hangzhou = {p["id"] for p in own("food.json")["restaurants"] if p["city"] == "Hangzhou"}
    found = await answer(bare_clone["food"], "restaurants", city="Hangzhou")
    assert {p["id"] for p in found["restaurants"]} == hangzhou
    bob = next(w for w in own("wallet.json")["wallets"] if w["user"] == "bob")
    found = await answer(bare_clone["payment"], "balance", user="bob")
    assert found["balance_cents"] == bob["balance_cents"]


@pytest.mark.slow
@pytest.mark.parametrize("service", list(SCRIPTS))
def test_a_missing_seed_folder_stops_a_service_with_a_clear_message(tmp_path: Path, service: str) -> None:
    nowhere = tmp_path / "nowhere"
    argv = [sys.executable, str(SERVICES / SCRIPTS[service][0]), *SCRIPTS[service][1:]]
    argv += ["--data-dir", str(tmp_path / "data"), "--seed", str(nowhere)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=clean_env(), timeout=60)
    assert done.returncode == 1
    missing = nowhere / SEED_FILES[service]
    assert f"seed file not found: {missing} (pass --seed DIR or set AIGRID_SHARED)" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_aigrid_shared_chooses_the_seed_folder(tmp_path: Path) -> None:
    argv = [sys.executable, str(SERVICES / "payment.py"), "--data-dir", str(tmp_path / "data")]
    env = clean_env() | {"AIGRID_SHARED": str(tmp_path / "elsewhere")}
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=60)
    assert done.returncode == 1
    assert (
        f"seed file not found: {tmp_path / 'elsewhere' / 'fixtures' / 'services' / 'wallet.json'}"
        in done.stderr
    )
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_launcher_stops_on_a_missing_seed_folder_with_the_message(tmp_path: Path) -> None:
    ports = ",".join(map(str, distinct_ports(len(SCRIPTS))))
    argv = [sys.executable, str(SERVICES / "run.py"), "--data-dir", str(tmp_path / "data")]
    argv += ["--ports", ports, "--seed", str(tmp_path / "nowhere")]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=clean_env(), timeout=120)
    assert done.returncode == 1, done.stderr
    assert "seed file not found:" in done.stderr and "(pass --seed DIR or set AIGRID_SHARED)" in done.stderr
    assert "Traceback" not in done.stderr
