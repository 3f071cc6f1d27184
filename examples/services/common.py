"""What the example services share: seed data, their own SQLite store, idempotency, MCP over HTTP.

Not a service itself: each service (``shop.py``, ``payment.py``, ``travel.py``, ``food.py``) imports it
and is run as its own process, for example::

    python examples/services/payment.py --port 8810 --data-dir /tmp/aigrid-services

Common options: ``--host`` (default 127.0.0.1), ``--port``, ``--data-dir`` (where the service keeps its
SQLite database; created and seeded on first start only) and ``--seed DIR`` (the seed JSON; default
``$AIGRID_SHARED/fixtures/services`` when AIGRID_SHARED is set, else the project's own world in
``seed/`` beside this file). The seed files are only read, never written. MCP is served over
streamable HTTP at ``http://HOST:PORT/mcp``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_events import RETRY_MS, BoundedEventStore

HERE = Path(__file__).resolve().parent
OWN_SEED = HERE / "seed"  # the world written for aigrid, so a bare clone runs
Row = dict[str, Any]

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS service_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    operation TEXT NOT NULL,
    key TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (operation, key)
);
"""


def default_seed_dir() -> Path:
    """``$AIGRID_SHARED/fixtures/services`` when AIGRID_SHARED is set, else the in-repo ``seed`` folder."""
    shared = os.environ.get("AIGRID_SHARED")
    return Path(shared) / "fixtures" / "services" if shared else OWN_SEED


def service_parser(doc: str | None, default_port: int) -> argparse.ArgumentParser:
    """The command line every service takes; a service adds its own options to it."""
    parser = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default_port, help=f"port (default {default_port})")
    parser.add_argument("--data-dir", type=Path, required=True, help="where the service keeps its database")
    parser.add_argument(
        "--seed",
        type=Path,
        default=default_seed_dir(),
        help="the seed JSON folder (default $AIGRID_SHARED/fixtures/services, else examples/services/seed)",
    )
    return parser


def read_seed(seed_dir: Path, name: str) -> Any:
    """The parsed seed file ``name``; a missing one stops the service with a clear message."""
    path = seed_dir / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise SystemExit(f"seed file not found: {path} (pass --seed DIR or set AIGRID_SHARED)") from None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"seed file is not valid JSON: {path}: {exc}") from None


def now() -> str:
    """The current time, ISO 8601 in UTC."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_id(prefix: str) -> str:
    """A fresh identifier such as ``pay_3f9a1c2b7d4e``."""
    return f"{prefix}_{secrets.token_hex(6)}"


def fetch_one(db: sqlite3.Connection, sql: str, params: tuple[Any, ...], missing: str) -> Row:
    """The one row ``sql`` selects; none is the tool error ``missing`` (an unknown id)."""
    row = db.execute(sql, params).fetchone()
    if row is None:
        raise ToolError(missing)
    return dict(row)


def fetch_all(db: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
    """Every row ``sql`` selects, as dicts."""
    return [dict(row) for row in db.execute(sql, params)]


def require_key(idempotency_key: str) -> str:
    """The key, refused when blank."""
    if not idempotency_key.strip():
        raise ToolError("idempotency_key must not be empty: pass a fresh unique key for each new request")
    return idempotency_key


class Store:
    """The service's own SQLite database (WAL), seeded once, with one writer at a time."""

    def __init__(self, path: Path, schema: str, seed: Callable[[sqlite3.Connection], None]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Tools run in worker threads; the lock makes the one connection safe to share.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(schema + _BOOKKEEPING)
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM service_meta WHERE key = 'seeded_at'").fetchone() is None:
                seed(db)
                db.execute("INSERT INTO service_meta VALUES ('seeded_at', ?)", (now(),))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one transaction: committed on success, rolled back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        """Rows of one query."""
        with self.transaction() as db:
            return fetch_all(db, sql, params)

    def once(self, operation: str, idempotency_key: str, action: Callable[[sqlite3.Connection], Row]) -> Row:
        """Run ``action`` once per (operation, key): a key seen before returns the stored first result.

        The action and the record of its result commit together; a failed action stores nothing, so
        the same key may be tried again.
        """
        key = require_key(idempotency_key)
        with self.transaction() as db:
            seen = db.execute(
                "SELECT result FROM idempotency WHERE operation = ? AND key = ?", (operation, key)
            ).fetchone()
            if seen is not None:
                stored: Row = json.loads(seen[0])
                return stored
            result = action(db)
            db.execute(
                "INSERT INTO idempotency VALUES (?, ?, ?, ?)", (operation, key, json.dumps(result), now())
            )
            return result

    def live(self, service: str, table: str, id_column: str) -> dict[str, Any]:
        """The ledger of a seller: every live (not cancelled) order or booking, its payment and amount."""
        entries = self.read(
            f"SELECT {id_column} AS id, payment_id, amount_cents, status FROM {table}"
            f" WHERE status != 'cancelled' ORDER BY created_at, {id_column}"
        )
        return {"service": service, "entries": entries}


def new_server(service: str, name: str) -> MCPServer[Any]:
    """An MCP server named ``name`` whose instructions are the description in ``<service>.manifest.json``."""
    manifest = json.loads((HERE / f"{service}.manifest.json").read_text(encoding="utf-8"))
    return MCPServer(name, instructions=str(manifest["description"]), log_level="WARNING")


def serve(server: MCPServer[Any], args: argparse.Namespace) -> None:
    """Serve ``server`` over streamable HTTP at ``http://HOST:PORT/mcp`` until stopped.

    Each SSE stream starts with a priming event and a retry time, so a client that loses one
    reconnects with ``Last-Event-ID`` and gets what it missed.
    """
    print(f"{server.name}: serving MCP at http://{args.host}:{args.port}/mcp", file=sys.stderr, flush=True)
    events = BoundedEventStore()
    app = server.streamable_http_app(
        streamable_http_path="/mcp", event_store=events, retry_interval=RETRY_MS, host=args.host
    )
    uvicorn.run(events.guard(app), host=args.host, port=args.port, log_level="warning")
