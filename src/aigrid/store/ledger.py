"""The ledger writer: every metered request becomes one row, written by group commit.

A request's row is opened when it starts (status ``in_progress``), updated with progress while it
streams, and closed with its final counts. Closing is awaited: the caller sends the last byte to the
client only after the transaction holding the row has committed, so a reading the client received
survives a killed process. Rows from many concurrent requests share one transaction.

With SQLite the batch is written on the event loop itself, once per loop iteration: a local commit
without a disk flush costs tens of microseconds, far less than handing work to a thread and back,
and the WAL is checkpointed (the only step that flushes to disk) by a thread of its own. With a
networked database (PostgreSQL) the batch is written by a writer thread so the loop never waits on
the network.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, Table, bindparam, insert, text, update

from aigrid.store.schema import LedgerEntry

log = logging.getLogger(__name__)

Row = dict[str, Any]
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
}
_CHECKPOINT_EVERY_S = 1.0


class LedgerUnavailable(Exception):
    """The ledger could not commit in time; the reading stays queued and is retried."""


class _Statements:
    """Ledger SQL compiled once for the engine's dialect and run on a raw driver connection."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.columns = [c.name for c in _TABLE.columns]
        self._insert = (
            insert(_TABLE).values({c: bindparam(c) for c in self.columns}).compile(dialect=engine.dialect)
        )
        self._updates: dict[tuple[str, ...], Any] = {}

    def _args(self, compiled: Any, row: Row) -> Any:
        if compiled.positional:
            return tuple(row[name] for name in compiled.positiontup)
        return row

    def write(self, cursor: Any, inserts: list[Row], updates: dict[str, Row]) -> None:
        """Run one batch's statements on a cursor (the caller commits)."""
        if inserts:
            full = [{**_DEFAULTS, **row} for row in inserts]
            cursor.executemany(str(self._insert), [self._args(self._insert, r) for r in full])
        by_columns: dict[tuple[str, ...], list[Row]] = {}
        for row_id, values in updates.items():
            by_columns.setdefault(tuple(sorted(values)), []).append({"row_id": row_id, **values})
        for columns, params in by_columns.items():
            compiled = self._updates.get(columns)
            if compiled is None:
                stmt = (
                    update(_TABLE)
                    .where(_TABLE.c.id == bindparam("row_id"))
                    .values({c: bindparam(c) for c in columns})
                )
                compiled = self._updates[columns] = stmt.compile(dialect=self.engine.dialect)
            cursor.executemany(str(compiled), [self._args(compiled, p) for p in params])


class Ledger:
    """Group-committing writer of ledger rows."""

    def __init__(self, engine: Engine, *, max_batch: int = 512, fail_after_s: float = 10.0) -> None:
        self._engine = engine
        self._statements = _Statements(engine)
        self._inline = engine.dialect.name == "sqlite"
        self._max_batch = max_batch
        self._fail_after_s = fail_after_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inserts: dict[str, Row] = {}
        self._updates: dict[str, Row] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._failing_since: float | None = None
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None
        self.batches = 0
        self.rows_written = 0

    def start(self) -> None:
        """Open the writer's connection and start its helper thread; call from the event loop."""
        self._loop = asyncio.get_running_loop()
        self._conn = self._engine.raw_connection()
        target: Callable[[], None] = self._checkpoint_forever if self._inline else self._write_forever
        thread = threading.Thread(target=target, name="aigrid-ledger", daemon=True)
        thread.start()
        self._threads.append(thread)

    def open(self, row: Row) -> None:
        """Queue a new row; not awaited, it commits with the next batch."""
        with self._lock:
            self._inserts[row["id"]] = row
            self._kick()

    def progress(self, row_id: str, values: Row) -> None:
        """Queue an update of a row (tokens so far, or final values that cannot be awaited)."""
        with self._lock:
            self._merge(row_id, values)
            self._kick()

    async def close(self, row_id: str, values: Row) -> None:
        """Queue the final values of a row and wait until they are committed."""
        assert self._loop is not None, "Ledger.start() was not called"
        fut: asyncio.Future[None] = self._loop.create_future()
        with self._lock:
            self._merge(row_id, values)
            self._waiters.append(fut)
            self._kick()
        await fut

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        assert self._loop is not None, "Ledger.start() was not called"
        fut: asyncio.Future[None] = self._loop.create_future()
        with self._lock:
            self._waiters.append(fut)
            self._kick()
        await fut

    def stop(self) -> None:
        """Write what is queued, stop the helper thread and close the connection."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join()
        if self._inline:
            self._write_pending()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _merge(self, row_id: str, values: Row) -> None:
        pending = self._inserts.get(row_id)
        if pending is not None:
            pending.update(values)
        else:
            self._updates.setdefault(row_id, {}).update(values)

    def _kick(self) -> None:
        """Make sure a batch will be written (caller holds the lock)."""
        if not self._inline:
            self._wake.notify()
        elif not self._scheduled and self._loop is not None:
            self._scheduled = True
            # call_soon runs after the callbacks already ready, so every request that finishes in
            # this loop iteration joins the same transaction.
            self._loop.call_soon(self._write_pending)

    def _take(self) -> tuple[dict[str, Row], dict[str, Row], list[asyncio.Future[None]]]:
        with self._lock:
            self._scheduled = False
            batch = (self._inserts, self._updates, self._waiters)
            self._inserts, self._updates, self._waiters = {}, {}, []
        return batch

    def _write_pending(self) -> None:
        inserts, updates, waiters = self._take()
        if not (inserts or updates or waiters):
            return
        self._write_batch(inserts, updates, waiters)

    def _write_batch(
        self, inserts: dict[str, Row], updates: dict[str, Row], waiters: list[asyncio.Future[None]]
    ) -> bool:
        try:
            cursor = self._conn.cursor()
            try:
                rows = list(inserts.values())
                for start in range(0, max(len(rows), 1), self._max_batch):
                    self._statements.write(cursor, rows[start : start + self._max_batch], {})
                self._statements.write(cursor, [], updates)
            finally:
                cursor.close()
            self._conn.commit()
        except Exception as exc:
            log.exception("ledger write failed; the batch stays queued and is retried")
            try:
                self._conn.rollback()
            except Exception:
                log.exception("ledger rollback failed")
            self._requeue(inserts, updates, waiters, exc)
            return False
        self._failing_since = None
        self.batches += 1
        self.rows_written += len(inserts) + len(updates)
        self._resolve(waiters, None)
        return True

    def _requeue(
        self,
        inserts: dict[str, Row],
        updates: dict[str, Row],
        waiters: list[asyncio.Future[None]],
        exc: Exception,
    ) -> None:
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        give_up = now - self._failing_since > self._fail_after_s
        with self._lock:
            for row_id, row in inserts.items():
                newer = self._updates.pop(row_id, {})
                self._inserts[row_id] = {**row, **newer}
            for row_id, values in updates.items():
                self._updates[row_id] = {**values, **self._updates.get(row_id, {})}
            if not give_up:
                self._waiters[:0] = waiters
        if give_up:
            # The readings stay queued; only the callers stop waiting for them.
            self._resolve(waiters, LedgerUnavailable(str(exc)))
        if self._inline and self._loop is not None:
            self._loop.call_later(0.2, self._retry_inline)

    def _retry_inline(self) -> None:
        with self._lock:
            self._scheduled = False
            self._kick()

    def _resolve(self, waiters: list[asyncio.Future[None]], exc: Exception | None) -> None:
        if not waiters or self._loop is None or self._loop.is_closed():
            return
        if self._inline:
            _settle(waiters, exc)
        else:
            self._loop.call_soon_threadsafe(_settle, waiters, exc)

    def _write_forever(self) -> None:
        while True:
            with self._lock:
                while not (self._inserts or self._updates or self._waiters) and not self._stopping:
                    self._wake.wait()
                if self._stopping and not (self._inserts or self._updates or self._waiters):
                    return
            inserts, updates, waiters = self._take()
            if not self._write_batch(inserts, updates, waiters):
                time.sleep(0.2)

    def _checkpoint_forever(self) -> None:
        with self._engine.connect() as conn:
            while True:
                with self._lock:
                    if self._wake.wait_for(lambda: self._stopping, timeout=_CHECKPOINT_EVERY_S):
                        break
                try:
                    conn.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))
                    conn.commit()
                except Exception:
                    log.exception("WAL checkpoint failed")


def _settle(waiters: list[asyncio.Future[None]], exc: Exception | None) -> None:
    for fut in waiters:
        if fut.done():
            continue
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


def recover_interrupted(engine: Engine) -> int:
    """Mark rows left in progress by a killed server as interrupted; returns how many."""
    with engine.begin() as conn:
        result = conn.execute(
            update(_TABLE).where(_TABLE.c.status == "in_progress").values(status="interrupted")
        )
    return int(result.rowcount or 0)
