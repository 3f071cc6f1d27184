"""An example payment service (a wallet), a third-party MCP service: authorise, capture, void, refund.

    python examples/services/payment.py --port 8810 --data-dir /tmp/aigrid-services

MCP over streamable HTTP at ``http://127.0.0.1:PORT/mcp``; the database is ``DATA_DIR/payment.db``,
seeded from ``wallet.json``. Money is integer cents. A payment moves
authorised -> captured -> refunded, or authorised -> voided; anything else is refused. An authorisation
holds the money (the balance minus the holds must cover it); a capture takes it from the balance; a
refund gives it back; a void releases the hold. Every money call is idempotent by its key.
See ``payment.manifest.json`` for the operations.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from common import Row, Store, fetch_all, fetch_one, new_id, new_server, now, read_seed, serve, service_parser
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

SCHEMA = """
CREATE TABLE IF NOT EXISTS wallets (
    user TEXT PRIMARY KEY,
    balance_cents INTEGER NOT NULL CHECK (balance_cents >= 0),
    home_city TEXT
);
CREATE TABLE IF NOT EXISTS payments (
    payment_id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES wallets (user),
    amount_cents INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""
PAYMENT = "SELECT payment_id, user, amount_cents, state, created_at, updated_at FROM payments"
# Each move: the state it needs, the state it leads to, and what it does to the balance (sign).
MOVES = {
    "capture": ("authorised", "captured", -1),
    "void": ("authorised", "voided", 0),
    "refund": ("captured", "refunded", +1),
}


def build(seed_dir: Path, data_dir: Path) -> MCPServer[Any]:
    """The MCP server of the wallet with its store in ``data_dir``."""
    wallets = read_seed(seed_dir, "wallet.json")["wallets"]

    def seed(db: sqlite3.Connection) -> None:
        rows = [{"home_city": None, **wallet} for wallet in wallets]
        db.executemany("INSERT INTO wallets VALUES (:user, :balance_cents, :home_city)", rows)

    store = Store(data_dir / "payment.db", SCHEMA, seed)
    server = new_server("payment", "Wallet")

    def wallet_of(db: sqlite3.Connection, user: str) -> Row:
        wallet = fetch_one(db, "SELECT * FROM wallets WHERE user = ?", (user,), f"unknown user {user!r}")
        held = db.execute(
            "SELECT COALESCE(SUM(amount_cents), 0) FROM payments WHERE user = ? AND state = 'authorised'",
            (user,),
        ).fetchone()[0]
        return {**wallet, "held_cents": held, "available_cents": wallet["balance_cents"] - held}

    def payment_of(db: sqlite3.Connection, payment_id: str) -> Row:
        return fetch_one(
            db, PAYMENT + " WHERE payment_id = ?", (payment_id,), f"unknown payment id {payment_id!r}"
        )

    def move(operation: str, payment_id: str, idempotency_key: str) -> Row:
        needs, leads_to, sign = MOVES[operation]

        def apply(db: sqlite3.Connection) -> Row:
            payment = payment_of(db, payment_id)
            if payment["state"] != needs:
                raise ToolError(
                    f"cannot {operation} payment {payment_id}: it is {payment['state']}, and only"
                    f" {'an' if needs[0] == 'a' else 'a'} {needs} payment can be {leads_to}"
                )
            db.execute(
                "UPDATE wallets SET balance_cents = balance_cents + ? WHERE user = ?",
                (sign * payment["amount_cents"], payment["user"]),
            )
            db.execute(
                "UPDATE payments SET state = ?, updated_at = ? WHERE payment_id = ?",
                (leads_to, now(), payment_id),
            )
            return payment_of(db, payment_id)

        return store.once(operation, idempotency_key, apply)

    @server.tool()
    def balance(user: str) -> dict[str, Any]:
        """A user's wallet: balance_cents, held_cents (authorised, not yet captured) and available_cents."""
        with store.transaction() as db:
            return wallet_of(db, user)

    @server.tool()
    def authorise(user: str, amount_cents: int, idempotency_key: str) -> dict[str, Any]:
        """Hold `amount_cents` of the user's money for a purchase; returns the `payment_id` to give the
        seller. Fails when the balance minus the money already held is too low. Undo with `void`.
        """
        if amount_cents <= 0:
            raise ToolError(f"amount_cents must be a positive number of cents, not {amount_cents}")

        def hold(db: sqlite3.Connection) -> Row:
            wallet = wallet_of(db, user)
            if wallet["available_cents"] < amount_cents:
                raise ToolError(
                    f"not enough money: {user} has {wallet['available_cents']} cents available"
                    f" (balance {wallet['balance_cents']}, held {wallet['held_cents']}),"
                    f" {amount_cents} needed"
                )
            payment_id = new_id("pay")
            db.execute(
                "INSERT INTO payments VALUES (?, ?, ?, 'authorised', ?, ?)",
                (payment_id, user, amount_cents, now(), now()),
            )
            return payment_of(db, payment_id)

        return store.once("authorise", idempotency_key, hold)

    @server.tool()
    def capture(payment_id: str, idempotency_key: str) -> dict[str, Any]:
        """Take the held money of an authorised payment: the balance decreases. Undo with `refund`."""
        return move("capture", payment_id, idempotency_key)

    @server.tool()
    def void(payment_id: str, idempotency_key: str) -> dict[str, Any]:
        """Release the hold of an authorised (not captured) payment; no money moves."""
        return move("void", payment_id, idempotency_key)

    @server.tool()
    def refund(payment_id: str, idempotency_key: str) -> dict[str, Any]:
        """Give back the money of a captured payment: the balance increases again."""
        return move("refund", payment_id, idempotency_key)

    @server.tool()
    def get_payment(payment_id: str) -> dict[str, Any]:
        """One payment: user, amount_cents and state (authorised, captured, voided or refunded)."""
        with store.transaction() as db:
            return payment_of(db, payment_id)

    @server.tool()
    def ledger() -> dict[str, Any]:
        """Read-only, for consistency checks: every payment with its user, state and amount."""
        with store.transaction() as db:
            entries = fetch_all(
                db,
                "SELECT payment_id, user, amount_cents, state FROM payments ORDER BY created_at, payment_id",
            )
        return {"service": "payment", "entries": entries}

    return server


def main() -> None:
    """Parse the command line and serve the wallet."""
    args = service_parser(__doc__, 8810).parse_args()
    serve(build(args.seed, args.data_dir), args)


if __name__ == "__main__":
    main()
