"""The saga on an in-memory world of a shop and a wallet: every path ends with nothing half done.

``WorldMock`` stands in for two third-party services (their operations are tools, as a registered
MCP service's are), keeps idempotency keys as the example services do, and can fail on cue: lose
an answer after doing the work, or "kill the server" (a BaseException out of the saga) right
after an operation took effect, before the saga journaled its answer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from aigrid.config import ProviderConfig
from aigrid.entry import answers
from aigrid.entry.calls import Caller
from aigrid.entry.catalog import Catalog, catalog
from aigrid.entry.manifest import Manifest
from aigrid.entry.plan import Plan, PlanError
from aigrid.entry.reading import read
from aigrid.entry.registry import Service
from aigrid.entry.saga import Saga
from aigrid.kernel.providers.manager import ProviderStatus
from aigrid.kernel.providers.mcp import McpToolError
from aigrid.kernel.tools import CallContext, Tool, ToolRegistry
from aigrid.store.accounts import AccountStore
from aigrid.store.db import StoreCalls, make_engine, migrate, sqlite_url
from aigrid.store.entries import EntryRecord, EntryStore


class ServerKilled(BaseException):
    """The server died mid-call: nothing after this point of the saga ran."""


# A service's refusal, as the MCP provider raises it.
ToolFailed = McpToolError


class WorldMock:
    """A shop and a wallet in memory, with idempotency keys and failures on cue."""

    def __init__(self, balance: int = 100_000, stock: int = 5, price: int = 2_500) -> None:
        self.balance = balance
        self.products = {
            "SKU-1": {"sku": "SKU-1", "name": "Blue Kettle", "price_cents": price, "stock": stock}
        }
        self.orders: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.done: dict[tuple[str, str], Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.kill_after: set[str] = set()  # ops after whose effect the server dies
        self.lose_answer: set[str] = set()  # ops whose first answer is lost on the way
        self.overcharge = 0
        self.stock_gone_at_order = False

    def tools(self) -> list[Tool]:
        ops = {
            "shop.search": (self.search, {"query": {"type": "string"}}),
            "shop.create_order": (
                self.create_order,
                {
                    "sku": {"type": "string"},
                    "quantity": {"type": "integer"},
                    "payment_id": {"type": "string"},
                },
            ),
            "shop.cancel_order": (self.cancel_order, {"order_id": {"type": "string"}}),
            "pay.authorise": (
                self.authorise,
                {"user": {"type": "string"}, "amount_cents": {"type": "integer"}},
            ),
            "pay.capture": (self.move("authorised", "captured", -1), {"payment_id": {"type": "string"}}),
            "pay.void": (self.move("authorised", "voided", 0), {"payment_id": {"type": "string"}}),
            "pay.refund": (self.move("captured", "refunded", +1), {"payment_id": {"type": "string"}}),
        }
        return [
            Tool(
                name,
                name,
                self._handler(name, fn),
                {"type": "object", "properties": props, "required": list(props)},
            )
            for name, (fn, props) in ops.items()
        ]

    def _handler(self, name: str, fn: Any) -> Any:
        async def handler(args: dict[str, Any], context: CallContext) -> Any:
            self.calls.append((name, context.idempotency_key))
            key = (name, context.idempotency_key)
            if key not in self.done or name == "shop.search":
                self.done[key] = fn(**args)  # a refusal raises and stores nothing
            if name in self.kill_after:
                self.kill_after.discard(name)
                raise ServerKilled(name)
            if name in self.lose_answer:
                self.lose_answer.discard(name)
                raise ConnectionError("connection reset")
            return self.done[key]

        return handler

    def search(self, query: str) -> dict[str, Any]:
        return {"results": [dict(p) for p in self.products.values() if query.lower() in p["name"].lower()]}

    def create_order(self, sku: str, quantity: int, payment_id: str) -> dict[str, Any]:
        product = self.products[sku]
        if self.stock_gone_at_order:
            product["stock"] = 0
        if product["stock"] < quantity:
            raise ToolFailed(f"out of stock: {sku}")
        product["stock"] -= quantity
        order_id = f"order-{len(self.orders) + 1}"
        amount = product["price_cents"] * quantity + self.overcharge
        self.orders[order_id] = {
            "order_id": order_id,
            "sku": sku,
            "quantity": quantity,
            "amount_cents": amount,
            "payment_id": payment_id,
            "status": "placed",
        }
        return dict(self.orders[order_id])

    def cancel_order(self, order_id: str) -> dict[str, Any]:
        order = self.orders[order_id]
        if order["status"] != "cancelled":
            order["status"] = "cancelled"
            self.products[order["sku"]]["stock"] += order["quantity"]
        return dict(order)

    def authorise(self, user: str, amount_cents: int) -> dict[str, Any]:
        held = sum(p["amount_cents"] for p in self.payments.values() if p["state"] == "authorised")
        if self.balance - held < amount_cents:
            raise ToolFailed(f"not enough money: {user} has {self.balance - held} cents available")
        payment_id = f"pay-{len(self.payments) + 1}"
        self.payments[payment_id] = {
            "payment_id": payment_id,
            "amount_cents": amount_cents,
            "state": "authorised",
        }
        return dict(self.payments[payment_id])

    def move(self, needs: str, leads_to: str, sign: int) -> Any:
        def apply(payment_id: str) -> dict[str, Any]:
            payment = self.payments[payment_id]
            if payment["state"] != needs:
                raise ToolFailed(f"payment {payment_id} is {payment['state']}, not {needs}")
            payment["state"] = leads_to
            self.balance += sign * payment["amount_cents"]
            return dict(payment)

        return apply

    def consistent(self) -> None:
        """Money taken equals the live orders, each paid by a captured payment; nothing left held."""
        live = {o["payment_id"]: o["amount_cents"] for o in self.orders.values() if o["status"] == "placed"}
        captured = {p: v["amount_cents"] for p, v in self.payments.items() if v["state"] == "captured"}
        assert live == captured
        assert not [p for p in self.payments.values() if p["state"] == "authorised"], "no hold is left"


SHOP = Manifest.model_validate(
    {
        "category": "shop",
        "description": "a shop",
        "operations": {
            "search": {},
            "create_order": {"confirm": True, "undo": "cancel_order", "idempotency": True},
            "cancel_order": {"idempotency": True},
        },
    }
)
PAY = Manifest.model_validate(
    {
        "category": "payment",
        "description": "a wallet",
        "operations": {
            "authorise": {"confirm": True, "undo": "void", "idempotency": True},
            "capture": {"confirm": True, "undo": "refund", "idempotency": True},
            "void": {"idempotency": True},
            "refund": {"idempotency": True},
        },
    }
)
PLAN = Plan.model_validate(
    {
        "steps": [
            {"id": "a", "call": "shop.search", "args": {"query": "kettle"}},
            {"id": "pick", "choose": "cheapest", "from": ["a"]},
            {"id": "buy", "call": "shop.create_order", "args": {"sku": "$pick.sku", "quantity": 2}},
        ]
    }
)


def _catalog(world: WorldMock) -> Catalog:
    tools = ToolRegistry()
    tools.add_all(world.tools())
    services = [
        Service(
            name,
            manifest,
            ProviderStatus(ProviderConfig(name=name, kind="mcp", url="http://mock"), "runtime", (), None),
        )
        for name, manifest in (("shop", SHOP), ("pay", PAY))
    ]
    return catalog(services, tools, 1)


@pytest.fixture
def store(tmp_path: Path) -> EntryStore:
    engine: Engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    AccountStore(engine).ensure_tenant("t")
    return EntryStore(engine)


async def _confirmed(store: EntryStore, world: WorldMock, plan: Plan = PLAN) -> EntryRecord:
    """An entry read and confirmed: what the user saw, moved to running."""
    entry = store.create(1, "alice", "buy two kettles")
    reading = await read(plan, _catalog(world), Caller(entry.id, 1))
    summary = answers.summary(reading.purchases, "alice", "pay")
    store.move(entry.id, ["planning"], "awaiting_confirmation", summary=summary)
    moved = store.move(entry.id, ["awaiting_confirmation"], "running")
    assert moved is not None
    return moved


async def _run(store: EntryStore, world: WorldMock, entry: EntryRecord) -> EntryRecord:
    async def current() -> Catalog:
        return _catalog(world)

    return await Saga(store.get(entry.id), store, current, StoreCalls(store._engine)).run()


async def test_a_purchase_authorises_orders_and_captures_once(store: EntryStore) -> None:
    world = WorldMock()
    entry = await _confirmed(store, world)
    assert entry.summary is not None and entry.summary["total_cents"] == 5_000
    assert "Buy 2 × Blue Kettle from shop for 50.00" in entry.summary["text"]
    ended = await _run(store, world, entry)
    assert ended.state == "done"
    assert ended.answer is not None and "order-1" in ended.answer and "Paid 50.00" in ended.answer
    assert [c[0] for c in world.calls[1:]] == ["pay.authorise", "shop.create_order", "pay.capture"]
    assert world.balance == 95_000 and world.products["SKU-1"]["stock"] == 3
    world.consistent()
    kinds = [s.kind for s in store.journal(entry.id)]
    assert kinds == ["intent", "result"] * 3, "every call is journaled before it is made and when it answers"


async def test_payment_declined_leaves_nothing_done(store: EntryStore) -> None:
    world = WorldMock(balance=4_000)
    ended = await _run(store, world, await _confirmed(store, world))
    assert ended.state == "failed"
    assert ended.answer is not None and "not enough money" in ended.answer
    assert not world.orders and world.balance == 4_000
    world.consistent()


async def test_out_of_stock_after_authorise_voids_the_hold(store: EntryStore) -> None:
    world = WorldMock()
    entry = await _confirmed(store, world)
    world.stock_gone_at_order = True  # someone else bought the last ones since the search
    ended = await _run(store, world, entry)
    assert ended.state == "failed"
    assert (
        ended.answer is not None
        and "out of stock" in ended.answer
        and "payment hold released" in ended.answer
    )
    assert [p["state"] for p in world.payments.values()] == ["voided"]
    assert world.balance == 100_000
    world.consistent()


async def test_a_seller_charging_more_than_confirmed_is_undone(store: EntryStore) -> None:
    world = WorldMock()
    world.overcharge = 100
    ended = await _run(store, world, await _confirmed(store, world))
    assert ended.state == "failed"
    assert (
        ended.answer is not None
        and "charged 51.00" in ended.answer
        and "not the 50.00 confirmed" in ended.answer
    )
    assert world.orders["order-1"]["status"] == "cancelled"
    assert world.products["SKU-1"]["stock"] == 5
    world.consistent()


@pytest.mark.parametrize("dies_after", ["pay.authorise", "shop.create_order", "pay.capture"])
async def test_a_server_killed_mid_saga_is_finished_at_restart_without_charging_twice(
    store: EntryStore, dies_after: str
) -> None:
    world = WorldMock()
    entry = await _confirmed(store, world)
    world.kill_after.add(dies_after)
    with pytest.raises(ServerKilled):
        await _run(store, world, entry)
    assert store.get(entry.id).state == "running", "the entry stays open for the next start"
    ended = await _run(store, world, entry)  # the restarted server's recovery
    assert ended.state == "done"
    assert len(world.orders) == 1 and len(world.payments) == 1, "the same keys found the first calls' work"
    assert world.balance == 97_500 - 2_500
    world.consistent()


async def test_a_server_killed_while_undoing_goes_on_undoing_at_restart(store: EntryStore) -> None:
    world = WorldMock()
    entry = await _confirmed(store, world)
    world.overcharge = 1
    world.kill_after.add("shop.cancel_order")
    with pytest.raises(ServerKilled):
        await _run(store, world, entry)
    assert store.get(entry.id).state == "compensating"
    ended = await _run(store, world, entry)
    assert ended.state == "failed"
    assert world.orders["order-1"]["status"] == "cancelled"
    assert [p["state"] for p in world.payments.values()] == ["voided"]
    world.consistent()


async def test_undo_calls_answered_before_a_restart_are_not_made_again(store: EntryStore) -> None:
    world = WorldMock()
    entry = await _confirmed(store, world)
    world.overcharge = 1
    world.kill_after.add("pay.void")  # the order was cancelled and journaled; the void was not
    with pytest.raises(ServerKilled):
        await _run(store, world, entry)
    ended = await _run(store, world, entry)
    assert ended.state == "failed"
    assert [c[0] for c in world.calls].count("shop.cancel_order") == 1
    assert [c[0] for c in world.calls].count("pay.void") == 2, "the void had no journaled answer"
    reasons = [s for s in store.journal(entry.id) if s.kind == "note"]
    assert len(reasons) == 1
    world.consistent()


async def test_a_lost_answer_is_retried_under_the_same_key(store: EntryStore) -> None:
    world = WorldMock()
    world.lose_answer.update({"pay.authorise", "shop.create_order", "pay.capture"})
    ended = await _run(store, world, await _confirmed(store, world))
    assert ended.state == "done"
    made = [c for c in world.calls if c[0] != "shop.search"]
    assert len(made) == 6, "each call was made twice"
    assert all(made[i][1] == made[i + 1][1] for i in range(0, 6, 2)), "under the same idempotency key"
    assert len(world.orders) == 1 and len(world.payments) == 1 and world.balance == 95_000
    world.consistent()


async def test_a_saga_waits_for_a_service_that_is_down(store: EntryStore) -> None:
    world = WorldMock()
    entry = await _confirmed(store, world)
    up = asyncio.Event()

    async def current() -> Catalog:
        found = _catalog(world)
        if up.is_set():
            return found
        return Catalog({k: v for k, v in found.operations.items() if not k.startswith("pay.")}, "pay")

    run = asyncio.ensure_future(Saga(store.get(entry.id), store, current, StoreCalls(store._engine)).run())
    await asyncio.sleep(0.3)
    assert not run.done() and not world.payments
    up.set()
    ended = await asyncio.wait_for(run, 10)
    assert ended.state == "done"
    world.consistent()


async def test_nothing_in_stock_is_said_before_anything_is_asked(store: EntryStore) -> None:
    world = WorldMock(stock=0)
    with pytest.raises(
        PlanError, match=r"nothing found is available \(out of stock, sold out, full or closed\) at shop"
    ):
        await read(PLAN, _catalog(world), Caller("ent-x", 1))
    assert not world.payments
