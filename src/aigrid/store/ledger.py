"""The ledger writer: every metered request becomes one row, never lost, never counted twice.

Durability comes from an append-only journal in the data directory, not from the database. The
operations queued during one event-loop iteration (row inserts and updates) are appended to the
journal with a single ``write`` (group commit); a request's last byte goes to the client only
after the journal write holding its row has returned, so a reading the client received survives a
killed process (``sync = "full"`` adds a flush to disk per batch, for power loss). A writer thread
then applies the operations to the database in transactions of its own, off the request path, and
deletes journal segments once everything in them is committed. At start, what a killed server
left in the journal is applied before anything else reads the ledger. Applying is idempotent
(inserts are upserts by request id, in journal order), so a segment applied twice changes nothing.

One journal write costs one system call; a SQLite commit costs about twenty, which on small
virtual machines was the largest part of the latency aigrid added to a request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, Table, bindparam, not_, update
from sqlalchemy.dialects import postgresql, sqlite

from aigrid.store.cluster import Fenced, Owner, fence_check, owner_is_live
from aigrid.store.db import DriverStatement, write_lock
from aigrid.store.schema import LedgerEntry

log = logging.getLogger(__name__)

Row = dict[str, Any]
Op = list[Any]  # [0, row] inserts a row; [1, row_id, values] updates one
_TABLE: Table = LedgerEntry.__table__  # type: ignore[assignment]
_DEFAULTS: Row = {
    "key_id": None,
    "agent": None,
    "process_id": None,
    "deployment": None,
    "stream": False,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cached_tokens": 0,
    "cost_micro": 0,
    "latency_us": None,
    "ttft_us": None,
    "http_status": None,
    "error_code": None,
    "node_id": None,
    "node_epoch": None,
}
_SEGMENT_BYTES = 16 * 1024 * 1024
REJECTED_FILE = "rejected.jsonl"
_RETRY_S = 0.5
# The database is only for readers (who wait for it with flush), so the writer thread wakes at
# most this often: fewer, larger transactions and less contention for the interpreter lock.
_APPLY_EVERY_S = 0.02


class LedgerUnavailable(Exception):
    """The journal could not be written: the reading is not safe, so the answer must not go out."""


class _Statements:
    """Ledger SQL compiled once for the engine's dialect and run on a raw driver connection."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        columns = [c.name for c in _TABLE.columns]
        dialect_insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        stmt = dialect_insert(_TABLE).values({c: bindparam(c) for c in columns})
        upsert = stmt.on_conflict_do_update(
            index_elements=[_TABLE.c.id], set_={c: stmt.excluded[c] for c in columns if c != "id"}
        )
        self._upsert = DriverStatement(engine, upsert)
        self._updates: dict[tuple[str, ...], DriverStatement] = {}

    def commit(self, conn: Any, ops: list[Op]) -> None:
        """Apply operations on a driver connection and commit them as one transaction."""
        # A raw connection passes SQLAlchemy's events by: take the engine's write lock here.
        with write_lock(self.engine):
            cursor = conn.cursor()
            try:
                self.apply(cursor, ops)
            finally:
                cursor.close()
            conn.commit()

    def apply(self, cursor: Any, ops: list[Op]) -> None:
        """Run a sequence of journal operations on a cursor (the caller commits)."""
        inserts: dict[str, Row] = {}
        updates: dict[str, Row] = {}
        for op in ops:
            if op[0] == 0:
                row = op[1]
                inserts[row["id"]] = {**_DEFAULTS, **row}
                updates.pop(row["id"], None)
            elif op[1] in inserts:
                inserts[op[1]].update(op[2])
            else:
                updates.setdefault(op[1], {}).update(op[2])
        if inserts:
            self._upsert.run_many(cursor, list(inserts.values()))
        by_columns: dict[tuple[str, ...], list[Row]] = {}
        for row_id, values in updates.items():
            by_columns.setdefault(tuple(sorted(values)), []).append({"row_id": row_id, **values})
        for columns, params in by_columns.items():
            statement = self._updates.get(columns)
            if statement is None:
                stmt = (
                    update(_TABLE)
                    .where(_TABLE.c.id == bindparam("row_id"))
                    .values({c: bindparam(c) for c in columns})
                )
                statement = self._updates[columns] = DriverStatement(self.engine, stmt)
            statement.run_many(cursor, params)


def _segments(journal_dir: Path) -> list[Path]:
    return sorted(journal_dir.glob("segment-*.jsonl"))


def _read_segment(path: Path) -> list[Op]:
    ops: list[Op] = []
    for line in path.read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            ops.extend(orjson.loads(line))
        except orjson.JSONDecodeError:
            # Only a batch torn by a lost machine can end a segment this way; nobody was
            # answered on its strength, so it is dropped.
            log.warning("ignoring a torn batch at the end of %s", path)
    return ops


def _commit(engine: Engine, statements: _Statements, ops: list[Op]) -> None:
    """Apply operations in one transaction on a connection of their own."""
    conn = engine.raw_connection()
    try:
        statements.commit(conn, ops)
    finally:
        conn.close()


def replay_journal(engine: Engine, journal_dir: Path) -> int:
    """Apply what a previous server left in the journal; returns how many operations."""
    statements = _Statements(engine)
    applied = 0
    for path in _segments(journal_dir):
        ops = _read_segment(path)
        if ops:
            _commit(engine, statements, ops)
        applied += len(ops)
        path.unlink()
    return applied


class Ledger:
    """Journals ledger operations by group commit and applies them to the database behind."""

    def __init__(
        self,
        engine: Engine,
        journal_dir: Path,
        *,
        sync: str = "normal",
        owner: Callable[[], Owner | None] | None = None,
    ) -> None:
        self._engine = engine
        # Which server (node and epoch) new rows belong to, so that recovery elsewhere can tell
        # a live peer's rows in progress from a dead server's.
        self._owner = owner or (lambda: None)
        self._journal_dir = journal_dir
        self._fsync = sync == "full"
        self._statements = _Statements(engine)
        self._ops: list[Op] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._segment = 0
        self._segment_bytes = 0
        # Work for the writer thread: (segment number, ops, flush waiters), in journal order.
        self._applying: deque[tuple[int, list[Op], list[asyncio.Future[None]]]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._hurry = False
        self._thread: threading.Thread | None = None
        self._first_kept = 0
        self.batches = 0

    def start(self) -> None:
        """Open a fresh journal segment and start the writer thread; call on the event loop."""
        self._loop = asyncio.get_running_loop()
        self._journal_dir.mkdir(parents=True, exist_ok=True)
        existing = _segments(self._journal_dir)
        self._segment = int(existing[-1].stem.split("-")[1]) + 1 if existing else 1
        self._first_kept = self._segment
        self._open_segment()
        self._thread = threading.Thread(target=self._apply_forever, name="aigrid-ledger", daemon=True)
        self._thread.start()

    def _open_segment(self) -> None:
        path = self._journal_dir / f"segment-{self._segment:012d}.jsonl"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segment_bytes = 0

    # The event loop's side: queue operations, journal them once per loop iteration.

    def add(self, row: Row) -> None:
        """Queue a new row; not awaited."""
        self._queue([0, self._owned(row)])

    def _owned(self, row: Row) -> Row:
        owner = self._owner()
        if owner is None:
            return row
        return {**row, "node_id": owner.node_id, "node_epoch": owner.epoch}

    def progress(self, row_id: str, values: Row) -> None:
        """Queue an update of a row (tokens so far, or final values that cannot be awaited)."""
        self._queue([1, row_id, values])

    async def write(self, row: Row) -> None:
        """Queue a new row and wait until it is journaled."""
        await self._queue_and_wait([0, self._owned(row)])

    async def close(self, row_id: str, values: Row) -> None:
        """Queue a row's final values and wait until they are journaled."""
        await self._queue_and_wait([1, row_id, values])

    async def flush(self, wait_s: float = 10.0) -> None:
        """Wait until everything queued so far is in the database, for readers of the ledger."""
        assert self._loop is not None, "Ledger.start() was not called"
        fut: asyncio.Future[None] = self._loop.create_future()
        self._journal_now()
        with self._cond:
            if self._applying:
                self._applying[-1][2].append(fut)
                self._hurry = True
                self._cond.notify()
            else:
                fut.set_result(None)
        try:
            await asyncio.wait_for(fut, wait_s)
        except TimeoutError as exc:
            raise LedgerUnavailable("the database is behind the ledger journal") from exc

    async def _queue_and_wait(self, op: Op) -> None:
        assert self._loop is not None, "Ledger.start() was not called"
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(fut)
        self._queue(op)
        await fut

    def _queue(self, op: Op) -> None:
        self._ops.append(op)
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            # call_soon runs after the callbacks already ready, so every request that finishes in
            # this loop iteration joins the same journal write.
            self._loop.call_soon(self._journal_now)

    def _journal_now(self) -> None:
        self._scheduled = False
        ops, self._ops = self._ops, []
        waiters, self._waiters = self._waiters, []
        if not ops:
            return
        data = orjson.dumps(ops) + b"\n"
        try:
            os.write(self._fd, data)
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            log.exception("the ledger journal cannot be written")
            # The readings are not safe anywhere, so their answers must not go out; the
            # database still gets them, for what was produced is owed all the same.
            error = LedgerUnavailable(f"the ledger journal cannot be written: {exc}")
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(error)
            waiters = []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        self.batches += 1
        with self._cond:
            # Only an idle writer needs waking; a busy one picks the batch up on its next round.
            if not self._applying:
                self._cond.notify()
            self._applying.append((self._segment, ops, []))
        self._segment_bytes += len(data)
        if self._segment_bytes >= _SEGMENT_BYTES:
            os.close(self._fd)
            self._segment += 1
            self._open_segment()

    async def aclose(self) -> None:
        """Journal what is queued, let the writer apply everything, and stop it."""
        self._journal_now()
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._applying:
            # Everything is in the database: no segment is needed any more.
            for path in _segments(self._journal_dir):
                path.unlink()

    # The writer thread's side: apply journaled operations to the database.

    def _apply_forever(self) -> None:
        conn: Any = None
        last = 0.0
        while True:
            with self._cond:
                while not self._applying and not self._stopping:
                    self._cond.wait()
                if not self._applying:
                    break
                self._cond.wait_for(
                    lambda: self._hurry or self._stopping,
                    timeout=max(0.0, last + _APPLY_EVERY_S - time.monotonic()),
                )
                self._hurry = False
                batch = list(self._applying)
            last = time.monotonic()
            ops = [op for _, part, _ in batch for op in part]
            try:
                conn = conn or self._engine.raw_connection()
                self._statements.commit(conn, ops)
            except Exception as exc:
                _discard(conn)
                conn = None
                if _transient(exc):
                    log.exception("the database is unavailable; the ledger journal keeps the readings")
                    time.sleep(_RETRY_S)
                    continue
                # A batch the database refuses for its content would block the ledger forever;
                # apply it one operation at a time and set aside what cannot be stored.
                self._apply_one_by_one(ops)
            with self._cond:
                for _ in batch:
                    self._applying.popleft()
                newest = self._applying[0][0] if self._applying else self._segment
                waiters = [fut for _, _, futs in batch for fut in futs]
            if waiters and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(_settle, waiters)
            self._drop_segments_before(min(newest, batch[-1][0]))
        _discard(conn)

    def _apply_one_by_one(self, ops: list[Op]) -> None:
        for op in ops:
            try:
                _commit(self._engine, self._statements, [op])
            except Exception:
                log.exception("the database refused a ledger operation; it is kept in %s", REJECTED_FILE)
                with (self._journal_dir / REJECTED_FILE).open("ab") as fh:
                    fh.write(orjson.dumps(op) + b"\n")

    def _drop_segments_before(self, segment: int) -> None:
        while self._first_kept < segment:
            path = self._journal_dir / f"segment-{self._first_kept:012d}.jsonl"
            path.unlink(missing_ok=True)
            self._first_kept += 1


def _transient(exc: Exception) -> bool:
    """Whether a database error means "try again later" (PEP 249's operational errors)."""
    return type(exc).__name__ in ("OperationalError", "InterfaceError") or isinstance(exc, OSError)


def _discard(conn: Any) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:
            log.exception("closing a broken ledger connection failed")


def _settle(waiters: list[asyncio.Future[None]]) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)


def recover_interrupted(engine: Engine, owner: Owner | None = None) -> int:
    """Mark rows left in progress by servers that are gone as interrupted; returns how many.

    A row is left alone while its owner (node and epoch) still holds a live lease: it is a peer's
    stream that is still running. Rows of this node's earlier epochs, of nodes whose lease ran
    out, and rows written before the cluster existed (no owner) are marked. With ``owner``, the
    recovering server must itself be live, or it changes nothing (Fenced).
    """
    with engine.begin() as conn:
        if owner is not None:
            fence_check(conn, owner)
        gone = not_(owner_is_live(engine, _TABLE.c.node_id, _TABLE.c.node_epoch))
        result = conn.execute(
            update(_TABLE).where(_TABLE.c.status == "in_progress", gone).values(status="interrupted")
        )
    return int(result.rowcount or 0)


class InterruptedSweep:
    """Marks, every ``every_s``, the rows in progress whose owner's lease has ended.

    Recovery at start covers a server that comes back; this covers one that does not (its
    machine is gone): a live peer marks its streams within a lease and a sweep. A row of a
    paused server marked this way is set right by that server's own final update if it wakes
    and finishes the stream: the ledger records what clients received.
    """

    def __init__(self, engine: Engine, owner: Callable[[], Owner | None], every_s: float) -> None:
        self._engine = engine
        self._owner = owner
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sweeping; call on the event loop."""
        self._task = asyncio.create_task(self._run(), name="ledger-interrupted-sweep")

    async def aclose(self) -> None:
        """Stop sweeping."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def sweep(self) -> int:
        """One sweep; how many rows it marked (none while this server is itself fenced)."""
        owner = self._owner()
        if owner is None:
            return 0
        try:
            return await asyncio.to_thread(recover_interrupted, self._engine, owner)
        except Fenced:
            return 0  # not live: a live peer sweeps instead

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                marked = await self.sweep()
            except Exception:  # the database may be down for a while; the next sweep tries again
                log.warning("sweeping for interrupted ledger rows failed", exc_info=True)
                continue
            if marked:
                log.warning("recorded %d request(s) of servers whose lease ended as interrupted", marked)
