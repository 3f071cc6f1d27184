"""Engine creation and schema migration for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

P = ParamSpec("P")
T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"


class StoreCalls:
    """Runs blocking store calls from the event loop: inline on SQLite, on a thread otherwise.

    A local SQLite statement takes tens of microseconds; handing it to a thread and back took
    ten times that in context switches, so the kernel's many small journal writes run inline
    there. A database server answers over the network, so its calls go to a thread.
    """

    def __init__(self, engine: Engine) -> None:
        self._inline = engine.dialect.name == "sqlite"

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)``, without blocking the loop for longer than a local write."""
        if self._inline:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)


def sqlite_url(data_dir: Path) -> str:
    """The default database: one SQLite file in the data directory."""
    return f"sqlite:///{data_dir / 'aigrid.db'}"


def make_engine(url: str) -> Engine:
    """An engine with the settings aigrid relies on (WAL and busy waits on SQLite)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        # WAL lets readers run beside the ledger writer; synchronous=NORMAL keeps a committed
        # transaction through a killed process without a disk flush per commit (the ledger's
        # own durability comes from its journal, see ledger.py).
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        _serialise_writes(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()


def write_lock(engine: Engine) -> AbstractContextManager[Any]:
    """What a writer that bypasses SQLAlchemy's events (a raw DBAPI connection) holds to write."""
    lock = _LOCKS.get(engine)
    return nullcontext() if lock is None else lock


_HOLDS = "aigrid_write_lock"


def _serialise_writes(engine: Engine) -> None:
    """Let one transaction at a time write, queued on a lock rather than in SQLite's busy wait.

    SQLite allows one writer; the others are told "busy" and retry after sleeps of 1 ms and up,
    which turned a 0.2 ms journal write into 15 ms under 64 workers. A transaction takes the
    lock just before its first write (pysqlite begins it there) and lets go when it ends.
    """
    lock = _LOCKS[engine] = threading.RLock()

    @event.listens_for(engine, "before_cursor_execute")
    def _take(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not conn.info.get(_HOLDS) and statement.lstrip()[:7].upper().startswith(_WRITES):
            lock.acquire()
            conn.info[_HOLDS] = True

    def _let_go(info: dict[str, Any]) -> None:
        if info.pop(_HOLDS, False):
            lock.release()

    @event.listens_for(engine, "commit")
    def _committed(conn: Any) -> None:
        _let_go(conn.info)

    @event.listens_for(engine, "rollback")
    def _rolled_back(conn: Any) -> None:
        _let_go(conn.info)

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi: Any, record: Any) -> None:  # a connection closed mid-transaction
        _let_go(record.info)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
