"""An example food delivery service, a third-party MCP service: restaurants, menus, delivery orders.

    python examples/services/food.py --port 8830 --data-dir /tmp/aigrid-services

MCP over streamable HTTP at ``http://127.0.0.1:PORT/mcp``; the database is ``DATA_DIR/food.db``,
seeded from ``food.json``. Closed restaurants take no orders; every order adds the delivery fee.
An order records the ``payment_id`` of the payment service's authorisation that pays for it.
Money is integer cents. See ``food.manifest.json`` for the operations.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from common import Row, Store, fetch_all, fetch_one, new_id, new_server, now, read_seed, serve, service_parser
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

SCHEMA = """
CREATE TABLE IF NOT EXISTS restaurants (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL, cuisine TEXT NOT NULL,
    distance_km REAL NOT NULL, open INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS menu (
    restaurant_id TEXT NOT NULL REFERENCES restaurants (id), item TEXT NOT NULL,
    price_cents INTEGER NOT NULL, PRIMARY KEY (restaurant_id, item)
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY, restaurant_id TEXT NOT NULL, items TEXT NOT NULL,
    items_cents INTEGER NOT NULL, delivery_fee_cents INTEGER NOT NULL, amount_cents INTEGER NOT NULL,
    payment_id TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL
);
"""
RESTAURANT = "SELECT id, name, city, cuisine, distance_km, open FROM restaurants"


class OrderItem(BaseModel):
    """One line of a food order: a menu item by its exact name, and how many."""

    item: str = Field(description="the item's name exactly as on the menu")
    quantity: int = Field(default=1, description="how many, at least 1")


def build(seed_dir: Path, data_dir: Path) -> MCPServer[Any]:
    """The MCP server of the food delivery service with its store in ``data_dir``."""
    food = read_seed(seed_dir, "food.json")

    def seed(db: sqlite3.Connection) -> None:
        for place in food["restaurants"]:
            db.execute(
                "INSERT INTO restaurants VALUES (:id, :name, :city, :cuisine, :distance_km, :open)", place
            )
            db.executemany(
                "INSERT INTO menu VALUES (?, ?, ?)",
                [(place["id"], dish["item"], dish["price_cents"]) for dish in place["menu"]],
            )
        db.execute("INSERT INTO settings VALUES ('delivery_fee_cents', ?)", (food["delivery_fee_cents"],))

    store = Store(data_dir / "food.db", SCHEMA, seed)
    server = new_server("food", "Food delivery")

    def restaurant_of(db: sqlite3.Connection, restaurant_id: str) -> Row:
        place = fetch_one(
            db, RESTAURANT + " WHERE id = ?", (restaurant_id,), f"unknown restaurant id {restaurant_id!r}"
        )
        return {**place, "open": bool(place["open"])}

    def delivery_fee(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT value FROM settings WHERE key = 'delivery_fee_cents'").fetchone()[0])

    def order_of(db: sqlite3.Connection, order_id: str) -> Row:
        order = fetch_one(
            db, "SELECT * FROM orders WHERE order_id = ?", (order_id,), f"unknown order id {order_id!r}"
        )
        return {**order, "items": json.loads(order["items"])}

    @server.tool()
    def restaurants(city: str) -> dict[str, Any]:
        """Restaurants that deliver in a city, nearest first, each with its cuisine, distance_km and
        whether it is open now (closed ones take no orders).
        """
        with store.transaction() as db:
            found = fetch_all(
                db, RESTAURANT + " WHERE lower(city) = lower(?) ORDER BY distance_km, id", (city.strip(),)
            )
            fee = delivery_fee(db)
        places = [{**place, "open": bool(place["open"])} for place in found]
        return {"city": city, "delivery_fee_cents": fee, "restaurants": places}

    @server.tool()
    def menu(restaurant_id: str) -> dict[str, Any]:
        """A restaurant's menu: each item's exact name and price_cents, plus the delivery fee."""
        with store.transaction() as db:
            place = restaurant_of(db, restaurant_id)
            items = fetch_all(
                db,
                "SELECT item, price_cents FROM menu WHERE restaurant_id = ? ORDER BY rowid",
                (restaurant_id,),
            )
            fee = delivery_fee(db)
        return {**place, "delivery_fee_cents": fee, "items": items}

    @server.tool()
    def order(
        restaurant_id: str, items: list[OrderItem], payment_id: str, idempotency_key: str
    ) -> dict[str, Any]:
        """Order food for delivery: `items` is a list of {item, quantity} with item names as on the menu,
        paid by `payment_id` (an authorisation of the items' total plus delivery_fee_cents from the
        payment service). Closed restaurants refuse. The same idempotency_key again returns the first
        order and changes nothing.
        """
        if not items:
            raise ToolError("items must name at least one menu item")
        if not payment_id.strip():
            raise ToolError("payment_id is required: authorise the amount with the payment service first")

        def place_order(db: sqlite3.Connection) -> Row:
            place = restaurant_of(db, restaurant_id)
            if not place["open"]:
                raise ToolError(
                    f"closed restaurant: {place['name']} ({restaurant_id}) is not taking orders now"
                )
            prices = dict(
                db.execute("SELECT item, price_cents FROM menu WHERE restaurant_id = ?", (restaurant_id,))
            )
            lines: list[Row] = []
            for line in items:
                if line.item not in prices:
                    raise ToolError(
                        f"unknown item {line.item!r} at {place['name']}; the menu has: {', '.join(prices)}"
                    )
                if line.quantity < 1:
                    raise ToolError(f"quantity of {line.item!r} must be at least 1, not {line.quantity}")
                unit = prices[line.item]
                lines.append({**line.model_dump(), "price_cents": unit, "line_cents": unit * line.quantity})
            items_cents = sum(line["line_cents"] for line in lines)
            fee = delivery_fee(db)
            order_id = new_id("food-order")
            db.execute(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, 'placed', ?)",
                (
                    order_id,
                    restaurant_id,
                    json.dumps(lines),
                    items_cents,
                    fee,
                    items_cents + fee,
                    payment_id,
                    now(),
                ),
            )
            return order_of(db, order_id)

        return store.once("order", idempotency_key, place_order)

    @server.tool()
    def cancel_order(order_id: str, idempotency_key: str) -> dict[str, Any]:
        """Cancel a food order: status `cancelled`. Cancelling a cancelled order changes nothing and
        returns it as it is. Refund or void its payment with the payment service.
        """

        def cancel(db: sqlite3.Connection) -> Row:
            order_of(db, order_id)
            db.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (order_id,))
            return order_of(db, order_id)

        return store.once("cancel_order", idempotency_key, cancel)

    @server.tool()
    def get_order(order_id: str) -> dict[str, Any]:
        """One food order by its id: items, amount_cents (delivery included), payment_id and status."""
        with store.transaction() as db:
            return order_of(db, order_id)

    @server.tool()
    def ledger() -> dict[str, Any]:
        """Read-only, for consistency checks: every live (not cancelled) order with its payment and amount."""
        return store.live("food", "orders", "order_id")

    return server


def main() -> None:
    """Parse the command line and serve the food delivery service."""
    args = service_parser(__doc__, 8830).parse_args()
    serve(build(args.seed, args.data_dir), args)


if __name__ == "__main__":
    main()
