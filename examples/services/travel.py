"""An example travel agency, a third-party MCP service: search and book flights and hotels.

    python examples/services/travel.py --port 8820 --data-dir /tmp/aigrid-services

MCP over streamable HTTP at ``http://127.0.0.1:PORT/mcp``; the database is ``DATA_DIR/travel.db``,
seeded from ``travel.json``. A booking takes one seat (flight) or one room for some nights (hotel)
and records the ``payment_id`` of the payment service's authorisation that pays for it. Money is
integer cents. See ``travel.manifest.json`` for the operations.
"""

from __future__ import annotations

import sqlite3
from datetime import date as Date
from pathlib import Path
from typing import Any, Literal

from common import Row, Store, fetch_one, new_id, new_server, now, read_seed, serve, service_parser
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

SCHEMA = """
CREATE TABLE IF NOT EXISTS flights (
    id TEXT PRIMARY KEY, airline TEXT NOT NULL, from_city TEXT NOT NULL, to_city TEXT NOT NULL,
    depart TEXT NOT NULL, arrive TEXT NOT NULL, price_cents INTEGER NOT NULL,
    seats INTEGER NOT NULL CHECK (seats >= 0)
);
CREATE TABLE IF NOT EXISTS hotels (
    id TEXT PRIMARY KEY, city TEXT NOT NULL, name TEXT NOT NULL, stars INTEGER NOT NULL,
    price_per_night_cents INTEGER NOT NULL, rooms INTEGER NOT NULL CHECK (rooms >= 0)
);
CREATE TABLE IF NOT EXISTS bookings (
    booking_id TEXT PRIMARY KEY, kind TEXT NOT NULL, item_id TEXT NOT NULL, description TEXT NOT NULL,
    nights INTEGER, amount_cents INTEGER NOT NULL, payment_id TEXT NOT NULL, status TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""
FLIGHT = "SELECT id, airline, from_city, to_city, depart, arrive, price_cents, seats FROM flights"
HOTEL = "SELECT id, city, name, stars, price_per_night_cents, rooms FROM hotels"
# What a booking takes, per kind: the table and the column counted down.
STOCK = {"flight": ("flights", "seats"), "hotel": ("hotels", "rooms")}


def build(seed_dir: Path, data_dir: Path) -> MCPServer[Any]:
    """The MCP server of the travel agency with its store in ``data_dir``."""
    travel = read_seed(seed_dir, "travel.json")

    def seed(db: sqlite3.Connection) -> None:
        db.executemany(
            "INSERT INTO flights VALUES (:id, :airline, :from, :to, :depart, :arrive, :price_cents, :seats)",
            travel["flights"],
        )
        db.executemany(
            "INSERT INTO hotels VALUES (:id, :city, :name, :stars, :price_per_night_cents, :rooms)",
            travel["hotels"],
        )

    store = Store(data_dir / "travel.db", SCHEMA, seed)
    server = new_server("travel", "Travel agency")

    def booking_of(db: sqlite3.Connection, booking_id: str) -> Row:
        return fetch_one(
            db,
            "SELECT * FROM bookings WHERE booking_id = ?",
            (booking_id,),
            f"unknown booking id {booking_id!r}",
        )

    @server.tool()
    def search_flights(from_city: str, to_city: str, date: str) -> dict[str, Any]:
        """Flights from one city to another on a day (`date` is YYYY-MM-DD), earliest first, with
        price_cents and the seats left (0 is sold out). Times are ISO 8601 with their offset.
        """
        try:
            day = Date.fromisoformat(date).isoformat()
        except ValueError:
            raise ToolError(f"date must be YYYY-MM-DD, not {date!r}") from None
        flights = store.read(
            FLIGHT + " WHERE lower(from_city) = lower(?) AND lower(to_city) = lower(?)"
            " AND substr(depart, 1, 10) = ? ORDER BY depart",
            (from_city.strip(), to_city.strip(), day),
        )
        return {"from_city": from_city, "to_city": to_city, "date": day, "flights": flights}

    @server.tool()
    def search_hotels(city: str) -> dict[str, Any]:
        """Hotels in a city, cheapest first: stars, price_per_night_cents and rooms left (0 is full)."""
        hotels = store.read(
            HOTEL + " WHERE lower(city) = lower(?) ORDER BY price_per_night_cents, id", (city.strip(),)
        )
        return {"city": city, "hotels": hotels}

    @server.tool()
    def book(
        kind: Literal["flight", "hotel"], item_id: str, payment_id: str, idempotency_key: str, nights: int = 1
    ) -> dict[str, Any]:
        """Book one seat on a flight (`kind` "flight", `item_id` a flight id) or one room for `nights`
        nights (`kind` "hotel", `item_id` a hotel id), paid by `payment_id` (an authorisation of the
        amount from the payment service). Returns the booking id and amount_cents. The same
        idempotency_key again returns the first booking and changes nothing.
        """
        if kind == "hotel" and nights < 1:
            raise ToolError(f"nights must be at least 1, not {nights}")
        if not payment_id.strip():
            raise ToolError("payment_id is required: authorise the amount with the payment service first")

        def reserve(db: sqlite3.Connection) -> Row:
            if kind == "flight":
                item = fetch_one(db, FLIGHT + " WHERE id = ?", (item_id,), f"unknown flight id {item_id!r}")
                if item["seats"] < 1:
                    raise ToolError(f"sold out: flight {item_id} has no seats left")
                amount, stay = item["price_cents"], None
                what = f"{item['airline']} {item['from_city']} -> {item['to_city']}, departs {item['depart']}"
            else:
                item = fetch_one(db, HOTEL + " WHERE id = ?", (item_id,), f"unknown hotel id {item_id!r}")
                if item["rooms"] < 1:
                    raise ToolError(f"full: hotel {item_id} ({item['name']}) has no rooms left")
                amount, stay = item["price_per_night_cents"] * nights, nights
                what = f"{item['name']}, {item['city']}, {nights} night(s)"
            table, column = STOCK[kind]
            db.execute(f"UPDATE {table} SET {column} = {column} - 1 WHERE id = ?", (item_id,))
            booking_id = new_id("booking")
            db.execute(
                "INSERT INTO bookings VALUES (?, ?, ?, ?, ?, ?, ?, 'booked', ?)",
                (booking_id, kind, item_id, what, stay, amount, payment_id, now()),
            )
            return booking_of(db, booking_id)

        return store.once("book", idempotency_key, reserve)

    @server.tool()
    def cancel_booking(booking_id: str, idempotency_key: str) -> dict[str, Any]:
        """Cancel a booking: status `cancelled`, the seat or room free again. Cancelling a cancelled
        booking changes nothing and returns it as it is. Refund or void its payment with the payment service.
        """

        def cancel(db: sqlite3.Connection) -> Row:
            booking = booking_of(db, booking_id)
            if booking["status"] != "cancelled":
                table, column = STOCK[booking["kind"]]
                db.execute(f"UPDATE {table} SET {column} = {column} + 1 WHERE id = ?", (booking["item_id"],))
                db.execute("UPDATE bookings SET status = 'cancelled' WHERE booking_id = ?", (booking_id,))
            return booking_of(db, booking_id)

        return store.once("cancel_booking", idempotency_key, cancel)

    @server.tool()
    def get_booking(booking_id: str) -> dict[str, Any]:
        """One booking by its id: kind, item, nights, amount_cents, payment_id, status (booked, cancelled)."""
        with store.transaction() as db:
            return booking_of(db, booking_id)

    @server.tool()
    def ledger() -> dict[str, Any]:
        """Read-only, for consistency checks: every live (not cancelled) booking, its payment and amount."""
        return store.live("travel", "bookings", "booking_id")

    return server


def main() -> None:
    """Parse the command line and serve the travel agency."""
    args = service_parser(__doc__, 8820).parse_args()
    serve(build(args.seed, args.data_dir), args)


if __name__ == "__main__":
    main()
