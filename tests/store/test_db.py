"""SQLite upkeep: the checkpointer copies the write-ahead log into the database file."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from aigrid.store.accounts import AccountStore
from aigrid.store.db import WalCheckpointer, make_engine, migrate


def tenants_in(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        return int(conn.execute("SELECT count(*) FROM tenants").fetchone()[0])


@pytest.mark.asyncio
async def test_the_checkpointer_puts_committed_writes_into_the_database_file(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'aigrid.db'}")
    migrate(engine)
    checkpointer = WalCheckpointer(engine, every_s=0.01)
    checkpointer.start()
    accounts = AccountStore(engine)
    for i in range(20):
        accounts.ensure_tenant(f"tenant-{i}")
    await asyncio.sleep(0.2)
    # The database file alone, without its log, already holds what was committed.
    shutil.copy(tmp_path / "aigrid.db", tmp_path / "copy.db")
    assert tenants_in(tmp_path / "copy.db") == 20
    accounts.ensure_tenant("last")
    await checkpointer.aclose()  # a last checkpoint on the way out
    shutil.copy(tmp_path / "aigrid.db", tmp_path / "after.db")
    assert tenants_in(tmp_path / "after.db") == 21
    engine.dispose()


def test_unreachable_tells_a_lost_connection_from_a_refused_statement() -> None:
    psycopg = pytest.importorskip("psycopg")
    import sqlite3

    from sqlalchemy.exc import OperationalError as WrappedOperationalError

    from aigrid.store.db import unreachable

    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    assert unreachable(lost)
    assert unreachable(psycopg.errors.AdminShutdown("terminating connection due to administrator command"))
    assert unreachable(psycopg.errors.ConnectionFailure("connection failure"))
    assert unreachable(WrappedOperationalError("SELECT 1", {}, lost))
    assert not unreachable(psycopg.errors.UniqueViolation("duplicate key"))
    assert not unreachable(psycopg.errors.DeadlockDetected("deadlock detected"))
    assert not unreachable(sqlite3.OperationalError("database is locked"))
    assert not unreachable(ValueError("no"))
