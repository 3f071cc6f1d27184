"""An example shop, a third-party MCP service: search its products, place, cancel and look up orders.

One shop per process; the seed ``shops.json`` has two, ``northwind`` and ``lakeside``::

    python examples/services/shop.py --shop northwind --port 8801 --data-dir /tmp/aigrid-services
    python examples/services/shop.py --shop lakeside --port 8802 --data-dir /tmp/aigrid-services

MCP over streamable HTTP at ``http://127.0.0.1:PORT/mcp``; the database is ``DATA_DIR/shop-<id>.db``.
The shop does not take money itself: an order records the ``payment_id`` of the payment service's
authorisation that pays for it. Money is integer cents. See ``shop.manifest.json`` for the operations.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from common import Row, Store, fetch_one, new_id, new_server, now, read_seed, serve, service_parser
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    brand TEXT NOT NULL,
    category TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    stock INTEGER NOT NULL CHECK (stock >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    sku TEXT NOT NULL REFERENCES products (sku),
    name TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL,
    amount_cents INTEGER NOT NULL,
    payment_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""
PRODUCT = "SELECT sku, name, brand, category, price_cents, stock FROM products"


def build(shop_id: str, seed_dir: Path, data_dir: Path) -> MCPServer[Any]:
    """The MCP server of the shop ``shop_id`` with its store in ``data_dir``."""
    shops = {shop["id"]: shop for shop in read_seed(seed_dir, "shops.json")["shops"]}
    if shop_id not in shops:
        raise SystemExit(f"no shop {shop_id!r} in shops.json; there are: {', '.join(sorted(shops))}")
    shop = shops[shop_id]

    def seed(db: sqlite3.Connection) -> None:
        db.executemany(
            "INSERT INTO products VALUES (:sku, :name, :brand, :category, :price_cents, :stock)",
            shop["products"],
        )

    store = Store(data_dir / f"shop-{shop_id}.db", SCHEMA, seed)
    server = new_server("shop", str(shop["name"]))

    def order_of(db: sqlite3.Connection, order_id: str) -> Row:
        order = fetch_one(
            db, "SELECT * FROM orders WHERE order_id = ?", (order_id,), f"unknown order id {order_id!r}"
        )
        return {"shop": shop_id, **order}

    @server.tool()
    def search(query: str) -> dict[str, Any]:
        """Find products: every word of the query must appear in the name, brand or category, singular
        or plural (case-insensitive; an empty query lists everything). Prices are in cents; stock 0
        cannot be bought.
        """
        words = [_singular(w) for w in query.lower().split()]
        found = [
            {key: product[key] for key in ("sku", "name", "brand", "price_cents", "stock")}
            for product in store.read(PRODUCT + " ORDER BY sku")
            if all(w in f"{product['name']} {product['brand']} {product['category']}".lower() for w in words)
        ]
        return {"shop": shop_id, "query": query, "results": found}

    @server.tool()
    def product(sku: str) -> dict[str, Any]:
        """One product by its sku: name, brand, category, price_cents and stock."""
        with store.transaction() as db:
            found = fetch_one(
                db, PRODUCT + " WHERE sku = ?", (sku,), f"unknown sku {sku!r} in shop {shop_id}"
            )
        return {"shop": shop_id, **found}

    @server.tool()
    def create_order(sku: str, quantity: int, payment_id: str, idempotency_key: str) -> dict[str, Any]:
        """Order `quantity` of a product, paid by `payment_id` (an authorisation of price_cents*quantity
        from the payment service). Takes the items out of stock; the order's status is `placed`.
        The same idempotency_key again returns the first order and changes nothing.
        """
        if quantity < 1:
            raise ToolError(f"quantity must be at least 1, not {quantity}")
        if not payment_id.strip():
            raise ToolError("payment_id is required: authorise the amount with the payment service first")

        def place(db: sqlite3.Connection) -> Row:
            item = fetch_one(db, PRODUCT + " WHERE sku = ?", (sku,), f"unknown sku {sku!r} in shop {shop_id}")
            if item["stock"] < quantity:
                raise ToolError(
                    f"out of stock: {sku} ({item['name']}) has {item['stock']} left in shop {shop_id},"
                    f" {quantity} wanted"
                )
            db.execute("UPDATE products SET stock = stock - ? WHERE sku = ?", (quantity, sku))
            order_id = new_id(f"{shop_id}-order")
            db.execute(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, 'placed', ?)",
                (
                    order_id,
                    sku,
                    item["name"],
                    quantity,
                    item["price_cents"],
                    item["price_cents"] * quantity,
                    payment_id,
                    now(),
                ),
            )
            return order_of(db, order_id)

        return store.once("create_order", idempotency_key, place)

    @server.tool()
    def cancel_order(order_id: str, idempotency_key: str) -> dict[str, Any]:
        """Cancel an order: status `cancelled`, its items back in stock. Cancelling a cancelled order
        changes nothing and returns it as it is. Refund or void its payment with the payment service.
        """

        def cancel(db: sqlite3.Connection) -> Row:
            order = order_of(db, order_id)
            if order["status"] != "cancelled":
                db.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (order_id,))
                db.execute(
                    "UPDATE products SET stock = stock + ? WHERE sku = ?", (order["quantity"], order["sku"])
                )
            return order_of(db, order_id)

        return store.once("cancel_order", idempotency_key, cancel)

    @server.tool()
    def get_order(order_id: str) -> dict[str, Any]:
        """One order by its id: sku, quantity, amount_cents, payment_id and status (placed or cancelled)."""
        with store.transaction() as db:
            return order_of(db, order_id)

    @server.tool()
    def ledger() -> dict[str, Any]:
        """Read-only, for consistency checks: every live (not cancelled) order with its payment and amount."""
        return store.live(f"shop:{shop_id}", "orders", "order_id")

    return server


def main() -> None:
    """Parse the command line and serve one shop."""
    parser = service_parser(__doc__, 8801)
    parser.add_argument("--shop", required=True, help="which shop of shops.json: northwind or lakeside")
    args = parser.parse_args()
    serve(build(args.shop, args.seed, args.data_dir), args)


def _singular(word: str) -> str:
    """A plural's stem, so "power banks" finds a power bank ("boxes" finds a box, "glass" stays)."""
    for ending in ("ies", "es", "s"):
        if word.endswith(ending) and len(word) > len(ending) + 2 and not word.endswith("ss"):
            return word[: -len(ending)] + ("y" if ending == "ies" else "")
    return word


if __name__ == "__main__":
    main()
