"""The example third-party services as real processes, spoken to over MCP streamable HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent
from tests.support import (
    ADMIN_KEY,
    LiveServer,
    aigrid,
    check_a_lost_stream_resumes_in_its_own_session_only,
    check_streams_start_primed,
    free_port,
    stop_gracefully,
    wait_for_port,
)

from aigrid.cli.mcp_events import RETRY_MS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "examples" / "services"
SEED = Path(os.environ.get("AIGRID_SHARED", ROOT.parent / "shared")) / "fixtures" / "services"


def fixture(name: str) -> Any:
    return json.loads((SEED / name).read_text())


class Service:
    """One service process on a free port, with its own data dir; restartable on the same port."""

    def __init__(self, script: str, data_dir: Path, *args: str) -> None:
        self.script, self.data_dir, self.args = script, data_dir, args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        argv = [sys.executable, str(SERVICES / self.script), *self.args]
        argv += ["--port", str(self.port), "--data-dir", str(self.data_dir), "--seed", str(SEED)]
        log = (self.data_dir.parent / f"{self.data_dir.name}.log").open("ab")
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.data_dir.parent / f"{self.data_dir.name}.log").read_text(errors="replace")
                raise RuntimeError(f"{self.script} exited with {self.proc.returncode}:\n{log}")
            try:
                wait_for_port(self.port, timeout=0.5)
                return
            except TimeoutError:
                continue
        raise TimeoutError(f"{self.script} does not listen on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_gracefully(self.proc)


@contextmanager
def running_services(base: Path) -> Iterator[dict[str, Service]]:
    """The five example services, each with its data under ``base``, stopped at the end."""
    with started(
        {
            "northwind": Service("shop.py", base / "northwind", "--shop", "northwind"),
            "lakeside": Service("shop.py", base / "lakeside", "--shop", "lakeside"),
            "payment": Service("payment.py", base / "payment"),
            "travel": Service("travel.py", base / "travel"),
            "food": Service("food.py", base / "food"),
        }
    ) as running:
        yield running


@contextmanager
def started(running: dict[str, Service]) -> Iterator[dict[str, Service]]:
    """``running`` started together, each ready before it is handed out, all stopped at the end."""
    try:
        for service in running.values():
            service.start()
        for service in running.values():
            service.ready()
        yield running
    finally:
        for service in running.values():
            service.stop()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    with running_services(tmp_path_factory.mktemp("services")) as running:
        yield running


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


class Session:
    """One MCP client session: `ok` expects an answer, `fails` a tool error."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def ok(self, tool: str, **args: Any) -> dict[str, Any]:
        result = await self.client.call_tool(tool, args)
        assert not result.is_error, f"{tool} failed: {text(result)}"
        assert result.structured_content is not None
        return dict(result.structured_content)

    async def fails(self, tool: str, **args: Any) -> str:
        result = await self.client.call_tool(tool, args)
        assert result.is_error, f"{tool} should have failed: {text(result)}"
        return text(result)


@asynccontextmanager
async def connect(service: Service) -> AsyncIterator[Session]:
    async with Client(service.url, cache=None) as client:
        yield Session(client)


def key() -> str:
    return uuid.uuid4().hex


async def check_consistency(services: dict[str, Service]) -> None:
    """Every live order or booking is paid by one held or taken payment of its amount, and every held or
    taken payment pays for exactly one live order or booking."""
    live: dict[str, int] = {}
    for name in ("northwind", "lakeside", "travel", "food"):
        async with connect(services[name]) as session:
            for entry in (await session.ok("ledger"))["entries"]:
                assert entry["payment_id"] not in live, "one payment pays for one thing"
                live[entry["payment_id"]] = entry["amount_cents"]
    async with connect(services["payment"]) as pay:
        payments = (await pay.ok("ledger"))["entries"]
    open_payments = {
        p["payment_id"]: p["amount_cents"] for p in payments if p["state"] in ("authorised", "captured")
    }
    assert live == open_payments


async def test_read_answers_match_the_fixture(services: dict[str, Service]) -> None:
    shops = {shop["id"]: shop for shop in fixture("shops.json")["shops"]}
    for shop_id in ("northwind", "lakeside"):
        async with connect(services[shop_id]) as shop:
            products = {p["sku"]: p for p in shops[shop_id]["products"]}
            for sku, seeded in products.items():
                assert await shop.ok("product", sku=sku) == {"shop": shop_id, **seeded}
            plural = (await shop.ok("search", query="Pebble power banks"))["results"]
            assert plural and all("Power Bank" in p["name"] for p in plural), "plurals find the singular"
            found = (await shop.ok("search", query="aurora EARBUDS"))["results"]
            want = [p for p in products.values() if p["brand"] == "Aurora"]
            assert [r["sku"] for r in found] == [p["sku"] for p in want]
            assert found[0] == {k: want[0][k] for k in ("sku", "name", "brand", "price_cents", "stock")}
            by_category = (await shop.ok("search", query="Grocery"))["results"]
            assert {r["sku"] for r in by_category} == {p["sku"] for p in want_category(products, "grocery")}
            assert (await shop.ok("search", query="no such thing"))["results"] == []

    food = fixture("food.json")
    async with connect(services["food"]) as session:
        listed = (await session.ok("restaurants", city="hangzhou"))["restaurants"]
        seeded = sorted(
            (r for r in food["restaurants"] if r["city"] == "Hangzhou"), key=lambda r: r["distance_km"]
        )
        assert [(r["id"], r["open"]) for r in listed] == [(r["id"], r["open"]) for r in seeded]
        assert ("R04", False) in [(r["id"], r["open"]) for r in listed]
        menu = await session.ok("menu", restaurant_id="R01")
        assert menu["items"] == food["restaurants"][0]["menu"]
        assert menu["delivery_fee_cents"] == food["delivery_fee_cents"]

    travel = fixture("travel.json")
    async with connect(services["travel"]) as session:
        flights = (
            await session.ok("search_flights", from_city="Hangzhou", to_city="Chengdu", date="2026-12-05")
        )["flights"]
        seeded_flights = [
            f
            for f in travel["flights"]
            if (f["from"], f["to"], f["depart"][:10]) == ("Hangzhou", "Chengdu", "2026-12-05")
        ]
        assert [f["id"] for f in flights] == ["FL102", "FL101"], "earliest first"
        assert {(f["id"], f["price_cents"], f["seats"]) for f in flights} == {
            (f["id"], f["price_cents"], f["seats"]) for f in seeded_flights
        }
        hotels = (await session.ok("search_hotels", city="Beijing"))["hotels"]
        assert [h["id"] for h in hotels] == ["HT004", "HT005", "HT006"], "cheapest first"
        bad = await session.fails("search_flights", from_city="Hangzhou", to_city="Chengdu", date="5 Dec")
        assert "YYYY-MM-DD" in bad

    async with connect(services["payment"]) as pay:
        for wallet in fixture("wallet.json")["wallets"]:
            balance = await pay.ok("balance", user=wallet["user"])
            assert balance["balance_cents"] == wallet["balance_cents"]


def want_category(products: dict[str, Any], category: str) -> list[dict[str, Any]]:
    return [p for p in products.values() if p["category"] == category]


async def test_a_purchase_and_its_compensation_leave_consistent_ledgers(services: dict[str, Service]) -> None:
    async with connect(services["payment"]) as pay, connect(services["northwind"]) as shop:
        before = await pay.ok("balance", user="alice")
        stock = (await shop.ok("product", sku="NW-1003"))["stock"]
        held = await pay.ok("authorise", user="alice", amount_cents=2 * 12900, idempotency_key=key())
        assert held["state"] == "authorised" and held["amount_cents"] == 25800
        assert (await pay.ok("balance", user="alice"))["available_cents"] == before["available_cents"] - 25800
        order = await shop.ok(
            "create_order", sku="NW-1003", quantity=2, payment_id=held["payment_id"], idempotency_key=key()
        )
        assert order["status"] == "placed" and order["amount_cents"] == 25800
        assert order["payment_id"] == held["payment_id"]
        assert (await shop.ok("product", sku="NW-1003"))["stock"] == stock - 2
        captured = await pay.ok("capture", payment_id=held["payment_id"], idempotency_key=key())
        assert captured["state"] == "captured"
        assert (await pay.ok("balance", user="alice"))["balance_cents"] == before["balance_cents"] - 25800
        assert await shop.ok("get_order", order_id=order["order_id"]) == order
        await check_consistency(services)

        # The compensation: cancel the order, refund the capture.
        cancelled = await shop.ok("cancel_order", order_id=order["order_id"], idempotency_key=key())
        assert cancelled["status"] == "cancelled"
        again = await shop.ok("cancel_order", order_id=order["order_id"], idempotency_key=key())
        assert again == cancelled, "cancelling twice is a no-op"
        assert (await shop.ok("product", sku="NW-1003"))["stock"] == stock
        refunded = await pay.ok("refund", payment_id=held["payment_id"], idempotency_key=key())
        assert refunded["state"] == "refunded"
        assert await pay.ok("balance", user="alice") == before
        await check_consistency(services)

    # A hotel booked, then undone before capture: cancel the booking, void the hold.
    async with connect(services["payment"]) as pay, connect(services["travel"]) as travel:
        rooms = {h["id"]: h["rooms"] for h in (await travel.ok("search_hotels", city="Hangzhou"))["hotels"]}
        held = await pay.ok("authorise", user="alice", amount_cents=3 * 37000, idempotency_key=key())
        booking = await travel.ok(
            "book",
            kind="hotel",
            item_id="HT001",
            nights=3,
            payment_id=held["payment_id"],
            idempotency_key=key(),
        )
        assert booking["amount_cents"] == 111000 and booking["status"] == "booked"
        after = {h["id"]: h["rooms"] for h in (await travel.ok("search_hotels", city="Hangzhou"))["hotels"]}
        assert after["HT001"] == rooms["HT001"] - 1
        await check_consistency(services)
        await travel.ok("cancel_booking", booking_id=booking["booking_id"], idempotency_key=key())
        assert (await pay.ok("void", payment_id=held["payment_id"], idempotency_key=key()))[
            "state"
        ] == "voided"
        after = {h["id"]: h["rooms"] for h in (await travel.ok("search_hotels", city="Hangzhou"))["hotels"]}
        assert after == rooms
        await check_consistency(services)


async def test_the_same_idempotency_key_twice_changes_nothing(services: dict[str, Service]) -> None:
    async with connect(services["payment"]) as pay, connect(services["lakeside"]) as shop:
        before = await pay.ok("balance", user="carol")
        stock = (await shop.ok("product", sku="LS-2013"))["stock"]
        k1, k2, k3 = key(), key(), key()
        held = await pay.ok("authorise", user="carol", amount_cents=3900, idempotency_key=k1)
        assert await pay.ok("authorise", user="carol", amount_cents=3900, idempotency_key=k1) == held
        assert (await pay.ok("balance", user="carol"))["held_cents"] == before["held_cents"] + 3900
        order = await shop.ok(
            "create_order", sku="LS-2013", quantity=1, payment_id=held["payment_id"], idempotency_key=k2
        )
        same = await shop.ok(
            "create_order", sku="LS-2013", quantity=1, payment_id=held["payment_id"], idempotency_key=k2
        )
        assert same == order
        assert (await shop.ok("product", sku="LS-2013"))["stock"] == stock - 1
        captured = await pay.ok("capture", payment_id=held["payment_id"], idempotency_key=k3)
        assert await pay.ok("capture", payment_id=held["payment_id"], idempotency_key=k3) == captured
        assert (await pay.ok("balance", user="carol"))["balance_cents"] == before["balance_cents"] - 3900
        await check_consistency(services)
        cancel_key, refund_key = key(), key()
        await shop.ok("cancel_order", order_id=order["order_id"], idempotency_key=cancel_key)
        await pay.ok("refund", payment_id=held["payment_id"], idempotency_key=refund_key)
        assert (await pay.ok("refund", payment_id=held["payment_id"], idempotency_key=refund_key))[
            "state"
        ] == "refunded"
        assert await pay.ok("balance", user="carol") == before

    async with connect(services["payment"]) as pay, connect(services["food"]) as food:
        held = await pay.ok("authorise", user="alice", amount_cents=2 * 2400 + 500, idempotency_key=key())
        order_key = key()
        lines = [{"item": "BBQ Pork Buns", "quantity": 2}]
        first = await food.ok(
            "order",
            restaurant_id="R03",
            items=lines,
            payment_id=held["payment_id"],
            idempotency_key=order_key,
        )
        assert first["amount_cents"] == 5300 and first["delivery_fee_cents"] == 500
        second = await food.ok(
            "order",
            restaurant_id="R03",
            items=lines,
            payment_id=held["payment_id"],
            idempotency_key=order_key,
        )
        assert second == first
        live = [e["id"] for e in (await food.ok("ledger"))["entries"]]
        assert live.count(first["order_id"]) == 1 and len(live) == 1
        await check_consistency(services)
        await food.ok("cancel_order", order_id=first["order_id"], idempotency_key=key())
        await pay.ok("void", payment_id=held["payment_id"], idempotency_key=key())
        await check_consistency(services)


async def test_refusals_are_clear_tool_errors(services: dict[str, Service]) -> None:
    async with connect(services["northwind"]) as shop:
        stock = (await shop.ok("product", sku="NW-1002"))["stock"]
        assert "out of stock" in await shop.fails(
            "create_order", sku="NW-1005", quantity=1, payment_id="pay_x", idempotency_key=key()
        )
        too_many = await shop.fails(
            "create_order", sku="NW-1002", quantity=stock + 1, payment_id="pay_x", idempotency_key=key()
        )
        assert "out of stock" in too_many and f"{stock} left" in too_many
        assert (await shop.ok("product", sku="NW-1002"))["stock"] == stock, "a refusal changes nothing"
        assert "unknown sku" in await shop.fails("product", sku="NW-9999")
        assert "unknown order id" in await shop.fails("get_order", order_id="nope")
        assert "unknown order id" in await shop.fails("cancel_order", order_id="nope", idempotency_key=key())

    async with connect(services["payment"]) as pay:
        poor = await pay.fails("authorise", user="bob", amount_cents=29900, idempotency_key=key())
        assert "not enough money" in poor and "8000" in poor
        assert (await pay.ok("balance", user="bob"))["held_cents"] == 0
        assert "unknown user" in await pay.fails("balance", user="mallory")
        assert "unknown payment id" in await pay.fails(
            "capture", payment_id="pay_nope", idempotency_key=key()
        )
        assert "positive" in await pay.fails("authorise", user="alice", amount_cents=0, idempotency_key=key())

    async with connect(services["food"]) as food:
        closed = await food.fails(
            "order",
            restaurant_id="R04",
            items=[{"item": "Mala Hotpot for Two", "quantity": 1}],
            payment_id="pay_x",
            idempotency_key=key(),
        )
        assert "closed" in closed and "Spice Route Hotpot" in closed
        wrong = await food.fails(
            "order",
            restaurant_id="R01",
            items=[{"item": "Pizza", "quantity": 1}],
            payment_id="pay_x",
            idempotency_key=key(),
        )
        assert "unknown item 'Pizza'" in wrong
        assert "unknown restaurant id" in await food.fails("menu", restaurant_id="R99")

    async with connect(services["travel"]) as travel:
        sold_out = await travel.fails(
            "book", kind="flight", item_id="FL101", payment_id="pay_x", idempotency_key=key()
        )
        assert "sold out" in sold_out and "FL101" in sold_out
        full = await travel.fails(
            "book", kind="hotel", item_id="HT002", nights=1, payment_id="pay_x", idempotency_key=key()
        )
        assert "full" in full
        assert "unknown flight id" in await travel.fails(
            "book", kind="flight", item_id="FL999", payment_id="pay_x", idempotency_key=key()
        )
    await check_consistency(services)


async def test_the_payment_state_machine_refuses_illegal_moves(services: dict[str, Service]) -> None:
    async with connect(services["payment"]) as pay:
        voided = (await pay.ok("authorise", user="alice", amount_cents=100, idempotency_key=key()))[
            "payment_id"
        ]
        refused = await pay.fails("refund", payment_id=voided, idempotency_key=key())
        assert f"cannot refund payment {voided}: it is authorised" in refused
        assert "only a captured payment can be refunded" in refused
        await pay.ok("void", payment_id=voided, idempotency_key=key())
        for move in ("capture", "void", "refund"):
            refused = await pay.fails(move, payment_id=voided, idempotency_key=key())
            assert f"cannot {move} payment {voided}: it is voided" in refused

        taken = (await pay.ok("authorise", user="alice", amount_cents=100, idempotency_key=key()))[
            "payment_id"
        ]
        await pay.ok("capture", payment_id=taken, idempotency_key=key())
        assert "it is captured" in await pay.fails("void", payment_id=taken, idempotency_key=key())
        assert "it is captured" in await pay.fails("capture", payment_id=taken, idempotency_key=key())
        await pay.ok("refund", payment_id=taken, idempotency_key=key())
        for move in ("capture", "void", "refund"):
            assert "it is refunded" in await pay.fails(move, payment_id=taken, idempotency_key=key())
        assert (await pay.ok("get_payment", payment_id=taken))["state"] == "refunded"


async def test_seeding_happens_once_and_a_restart_keeps_the_changes(services: dict[str, Service]) -> None:
    seed_hash = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in SEED.glob("*.json")}
    northwind = services["northwind"]
    async with connect(services["payment"]) as pay, connect(northwind) as shop:
        stock = (await shop.ok("product", sku="NW-1018"))["stock"]
        held = await pay.ok("authorise", user="alice", amount_cents=45900, idempotency_key=key())
        order = await shop.ok(
            "create_order", sku="NW-1018", quantity=1, payment_id=held["payment_id"], idempotency_key=key()
        )
    northwind.stop()
    northwind.start().ready()
    async with connect(services["payment"]) as pay, connect(northwind) as shop:
        assert (await shop.ok("product", sku="NW-1018"))["stock"] == stock - 1, "not seeded again"
        assert (await shop.ok("get_order", order_id=order["order_id"]))["status"] == "placed"
        await check_consistency(services)
        await shop.ok("cancel_order", order_id=order["order_id"], idempotency_key=key())
        await pay.ok("void", payment_id=held["payment_id"], idempotency_key=key())
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in SEED.glob("*.json")} == seed_hash
    assert sorted(p.name for p in northwind.data_dir.iterdir() if p.suffix == ".db") == ["shop-northwind.db"]


async def test_manifests_describe_the_tools_the_services_serve(services: dict[str, Service]) -> None:
    for name, manifest_file in [
        ("northwind", "shop"),
        ("payment", "payment"),
        ("travel", "travel"),
        ("food", "food"),
    ]:
        manifest = json.loads((SERVICES / f"{manifest_file}.manifest.json").read_text())
        assert set(manifest) - {"payer"} == {"category", "description", "operations"}
        payer = manifest.get("payer")
        if payer is not None:  # the argument naming whose wallet: every operation that has it names a user
            async with Client(services[name].url, cache=None) as client:
                schemas = [t.input_schema for t in (await client.list_tools()).tools]
            assert any(payer in s["properties"] for s in schemas), f"no operation of {name} takes '{payer}'"
        assert manifest["category"] == manifest_file and len(manifest["description"]) > 40
        async with Client(services[name].url, cache=None) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(manifest["operations"]) == set(tools)
        for op, marks in manifest["operations"].items():
            assert set(marks) <= {"confirm", "undo", "idempotency"}
            assert marks.get("undo") in (None, *tools)
            takes_key = "idempotency_key" in tools[op].input_schema["properties"]
            assert takes_key == bool(marks.get("idempotency")), op
            assert tools[op].description


async def test_each_sse_stream_starts_with_a_priming_event_and_a_retry_time(
    services: dict[str, Service],
) -> None:
    for service in services.values():
        await check_streams_start_primed(service.url, RETRY_MS)


async def test_a_lost_stream_is_replayed_from_last_event_id_to_its_own_session_only(
    services: dict[str, Service],
) -> None:
    await check_a_lost_stream_resumes_in_its_own_session_only(services["payment"].url)


def test_each_service_registers_with_aigrid_unchanged(
    services: dict[str, Service], server: LiveServer
) -> None:
    for name, service in services.items():
        manifest = SERVICES / f"{'shop' if name in ('northwind', 'lakeside') else name}.manifest.json"
        added = aigrid(server, "service", "add", name, "--url", service.url, "--manifest", str(manifest))
        assert added.returncode == 0, added.stderr
    listed = httpx.get(f"{server.url}/v1/services", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert {(s["name"], s["category"], s["status"]) for s in listed["data"]} == {
        ("northwind", "shop", "up"),
        ("lakeside", "shop", "up"),
        ("payment", "payment", "up"),
        ("travel", "travel", "up"),
        ("food", "food", "up"),
    }
