"""Engine creation and schema migration for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import ClauseElement, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler

logger = logging.getLogger(__name__)
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


class DriverStatement:
    """A statement compiled once for an engine's dialect, to run on the driver's own cursor.

    SQLAlchemy's execution path costs about 0.2 ms a statement, the driver's about 0.01 ms; the
    statements every metered request or process step runs go straight to the driver.
    """

    __slots__ = ("_names", "sql")

    def __init__(self, engine: Engine, clause: ClauseElement) -> None:
        compiled = clause.compile(dialect=engine.dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError("a DriverStatement is a query or a write, not DDL")
        self.sql = str(compiled)
        self._names = tuple(compiled.positiontup or ()) if compiled.positional else None

    def args(self, params: Mapping[str, Any]) -> Any:
        """The parameters in the form the driver takes for this statement."""
        return params if self._names is None else tuple(params[name] for name in self._names)

    def run(self, cursor: Any, params: Mapping[str, Any]) -> Any:
        """Execute on ``cursor`` (whose rows the caller fetches)."""
        return cursor.execute(self.sql, self.args(params))

    async def arun(self, cursor: Any, params: Mapping[str, Any]) -> Any:
        """Execute on an async ``cursor``."""
        return await cursor.execute(self.sql, self.args(params))

    def run_many(self, cursor: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per parameter set."""
        cursor.executemany(self.sql, [self.args(row) for row in rows])


class DriverConnection:
    """Where a store's hot statements run: one driver connection kept open on SQLite, one per thread
    on a database server.

    SQLite's calls run inline on the event loop (see StoreCalls), so one connection serves them
    without the pool's checkout and return on every statement; a lock keeps other threads' calls
    apart. A database server's calls run on threads, each on a connection of its own thread's,
    kept in autocommit (``ServerConnections``): the pool's checkout and its rollback on return
    cost 0.3 ms a statement, more than the statement.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._keep = engine.dialect.name == "sqlite"
        self._kept: Any = None
        self._lock = threading.Lock()
        self._server = None if self._keep else server_connections(engine)

    @contextmanager
    def cursor(self, *, write: bool = False) -> Iterator[Any]:
        """A driver cursor; a writer's statements commit together at the end, under the write lock."""
        if self._server is not None:
            with self._server.cursor(write=write) as cursor:
                yield cursor
            return
        with self._lock:
            if self._kept is None:
                # Detached: the pool neither counts it as checked out nor hands it to anyone else.
                self._kept = self._engine.raw_connection()
                self._kept.detach()
            with self._transaction(self._kept, write) as cursor:
                yield cursor

    @contextmanager
    def _transaction(self, conn: Any, write: bool) -> Iterator[Any]:
        # A raw connection passes SQLAlchemy's events by, so a writer takes the write lock here.
        with write_lock(self._engine) if write else nullcontext():
            cursor = conn.cursor()
            try:
                yield cursor
                if write:
                    conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                cursor.close()


class ServerConnections:
    """One driver connection per thread to a database server, in autocommit, for the hot statements.

    A read is then one round trip; a write is its statements between BEGIN and COMMIT. A connection
    idle for longer than ``IDLE_PING_S`` is pinged before use (as the pool's pre-ping does), and one
    that fails is closed and replaced at the next call. All of them close when the engine is disposed.
    """

    IDLE_PING_S = 10.0

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        dbapi = engine.dialect.loaded_dbapi
        self._broken: tuple[type[Exception], ...] = (dbapi.OperationalError, dbapi.InterfaceError)
        event.listen(engine, "engine_disposed", lambda _engine: self.close())

    @contextmanager
    def cursor(self, *, write: bool) -> Iterator[Any]:
        """A cursor on this thread's connection; a writer's statements form one transaction."""
        conn = self._connection()
        cursor = conn.cursor()
        try:
            if write:
                cursor.execute("BEGIN")
            yield cursor
            if write:
                conn.commit()
        except BaseException as exc:
            if isinstance(exc, self._broken) or getattr(conn, "broken", False):
                self._drop(conn)
            elif write:
                conn.rollback()
            raise
        finally:
            if not conn.closed:
                cursor.close()
            self._local.used = time.monotonic()

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            if time.monotonic() - self._local.used < self.IDLE_PING_S:
                return conn
            try:
                ping = conn.cursor()
                ping.execute("SELECT 1")
                ping.close()
                self._local.used = time.monotonic()
                return conn
            except self._broken:
                self._drop(conn)
        proxy = self._engine.raw_connection()
        proxy.detach()  # the pool neither counts it as checked out nor hands it to anyone else
        conn = proxy.dbapi_connection
        assert conn is not None
        conn.autocommit = True
        self._local.conn, self._local.used = conn, time.monotonic()
        with self._lock:
            self._open.add(conn)
        return conn

    def _drop(self, conn: Any) -> None:
        with self._lock:
            self._open.discard(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        try:
            conn.close()
        except Exception:
            logger.debug("closing a broken connection failed", exc_info=True)

    def close(self) -> None:
        """Close every thread's connection (the engine is being disposed)."""
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            try:
                conn.close()
            except Exception:
                logger.debug("closing a kept connection failed", exc_info=True)


class LoopConnections:
    """One asynchronous driver connection per event loop to a PostgreSQL server, in autocommit.

    For the statements the loop sends itself, with no thread hop and no wait for the GIL on the
    way back (``ProcessStore``'s batched steps): on a busy server a thread's answer waited its
    turn behind the loop. Like ``ServerConnections``, a connection idle for longer than
    ``IDLE_PING_S`` is pinged before use, one that fails is replaced at the next call, and all
    of them close when the engine is disposed.
    """

    IDLE_PING_S = ServerConnections.IDLE_PING_S

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._kept: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = (
            weakref.WeakKeyDictionary()
        )
        dbapi = engine.dialect.loaded_dbapi
        self._broken: tuple[type[Exception], ...] = (dbapi.OperationalError, dbapi.InterfaceError)
        event.listen(engine, "engine_disposed", lambda _engine: self.close())

    @asynccontextmanager
    async def cursor(self) -> AsyncIterator[Any]:
        """A cursor on this loop's connection: each statement is its own transaction."""
        conn = await self._connection()
        cursor = conn.cursor()
        try:
            yield cursor
        except BaseException as exc:
            if unreachable(exc) or conn.broken:
                self._drop(conn)
            raise
        finally:
            if not conn.closed:
                await cursor.close()
            if (kept := self._kept.get(asyncio.get_running_loop())) is not None:
                kept[1] = time.monotonic()

    async def _connection(self) -> Any:
        loop = asyncio.get_running_loop()
        conn, used = self._kept.get(loop, (None, 0.0))
        if conn is not None and not conn.closed:
            if time.monotonic() - used < self.IDLE_PING_S:
                return conn
            try:
                await conn.execute("SELECT 1")
                return conn
            except self._broken:
                self._drop(conn)
        import psycopg  # only on PostgreSQL, where it is installed (the postgres extra)

        args, params = self._engine.dialect.create_connect_args(self._engine.url)
        conn = await psycopg.AsyncConnection.connect(*args, **params, autocommit=True)
        self._kept[loop] = [conn, time.monotonic()]
        return conn

    def _drop(self, conn: Any) -> None:
        for loop, (kept, _) in list(self._kept.items()):
            if kept is conn:
                del self._kept[loop]
        self._finish(conn)

    @staticmethod
    def _finish(conn: Any) -> None:
        # Closed without awaiting: the engine's disposal (and a broken connection) may come from
        # outside any loop, and a connection that is only ended needs no round trip.
        try:
            conn.pgconn.finish()
        except Exception:
            logger.debug("closing a loop's connection failed", exc_info=True)

    def close(self) -> None:
        """Close every loop's connection (the engine is being disposed)."""
        kept, self._kept = list(self._kept.values()), weakref.WeakKeyDictionary()
        for conn, _ in kept:
            self._finish(conn)


_SERVER_CONNECTIONS: weakref.WeakKeyDictionary[Engine, ServerConnections] = weakref.WeakKeyDictionary()
_SERVER_LOCK = threading.Lock()


def server_connections(engine: Engine) -> ServerConnections:
    """The engine's per-thread connections, shared by every store on it."""
    with _SERVER_LOCK:
        found = _SERVER_CONNECTIONS.get(engine)
        if found is None:
            found = _SERVER_CONNECTIONS[engine] = ServerConnections(engine)
        return found


_LOOP_CONNECTIONS: weakref.WeakKeyDictionary[Engine, LoopConnections] = weakref.WeakKeyDictionary()


def loop_connections(engine: Engine) -> LoopConnections | None:
    """The engine's per-loop connections, shared by every store on it; None where the driver has
    no asynchronous connections (only psycopg's are used)."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return None
    with _SERVER_LOCK:
        found = _LOOP_CONNECTIONS.get(engine)
        if found is None:
            found = _LOOP_CONNECTIONS[engine] = LoopConnections(engine)
        return found


# SQLSTATE classes that say the server did not run the statement for want of a connection: a
# connection exception (08), or the server shutting down, crashed or starting (57P).
_UNREACHABLE_STATES = ("08", "57P")


def unreachable(exc: BaseException) -> bool:
    """Whether an error says the database did not answer (a connection lost, refused or shut down),
    rather than that it refused a statement: whether a write made then committed is unknown."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or (exc.orig is not None and unreachable(exc.orig))
    if not hasattr(exc, "sqlstate"):  # psycopg's errors carry the server's SQLSTATE, or None
        return False
    state = exc.sqlstate
    if state is None:
        return type(exc).__name__ in ("OperationalError", "InterfaceError")
    return str(state).startswith(_UNREACHABLE_STATES)


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
            # A running server checkpoints from a thread of its own (WalCheckpointer); a writer
            # checkpoints only past this many pages (40 MB), when that thread falls behind.
            cur.execute(f"PRAGMA wal_autocheckpoint={_WRITER_CHECKPOINT_PAGES}")
            cur.close()

        _serialise_writes(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


_WRITER_CHECKPOINT_PAGES = 10_000


class WalCheckpointer:
    """Copies SQLite's write-ahead log into the database from a thread, every ``every_s``.

    Otherwise the writer whose commit takes the log past its limit does it, on the event loop:
    the copy and two file syncs cost milliseconds there, a third of the kernel's time per step
    under load. A passive checkpoint waits for no one and stops no writer. Nothing to do on a
    database server.
    """

    def __init__(self, engine: Engine, every_s: float = 0.25) -> None:
        self._engine = engine
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin checkpointing (on SQLite; elsewhere there is nothing to do)."""
        if self._engine.dialect.name == "sqlite" and self._task is None:
            self._task = asyncio.create_task(self._run(), name="sqlite-checkpointer")

    async def aclose(self) -> None:
        """Stop, after a last checkpoint."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            await asyncio.to_thread(self.checkpoint)

    def checkpoint(self) -> None:
        """One passive checkpoint: whatever of the log no reader still needs goes into the database."""
        with self._engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").all()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception:  # a busy or vanished file: the next round, or a writer, does it
                logger.warning("a WAL checkpoint failed", exc_info=True)


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


# The advisory lock that migrations take on PostgreSQL (any fixed number; this one spells "aigrid").
_MIGRATION_LOCK = 0x616967726964


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Servers of a cluster started together would each create the same tables: one at a
            # time, and the others then find the schema at its newest revision.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
