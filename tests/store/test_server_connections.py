"""The hot statements' connections to PostgreSQL: one per thread and one per event loop, kept,
replaced when they break.

A step of a process on PostgreSQL is one statement on a kept connection; a connection the server
dropped must cost one failed call at most, never a wedged store, and disposing of the engine must
close them all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from tests.postgres import Postgres

from aigrid.spec import AgentSpec
from aigrid.store.accounts import AccountError, AccountStore
from aigrid.store.agents import AgentStore
from aigrid.store.db import loop_connections, make_engine, migrate, server_connections
from aigrid.store.processes import ProcessStore


@pytest.fixture
def pg(postgres: Postgres) -> Iterator[Engine]:
    made = make_engine(postgres.new_database())
    migrate(made)
    yield made
    made.dispose()


def _process(engine: Engine) -> tuple[ProcessStore, str]:
    tenant = AccountStore(engine).ensure_tenant("t")
    stored, _ = AgentStore(engine).save(tenant, AgentSpec(name="w", instructions="Work.", model="m"))
    store = ProcessStore(engine)
    return store, store.create(tenant, stored, "go").pid


def _kept(engine: Engine) -> int:
    """Connections to this database other than the one counting."""
    with engine.connect() as conn:
        return int(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
            )
            or 0
        )


def test_a_step_is_one_statement_that_writes_all_of_it_or_nothing(pg: Engine) -> None:
    store, pid = _process(pg)
    record = store.append(pid, "model_request", {"n": 1}, after=[("model_response", {"n": 2})])
    assert record.steps == 2 and [s.seq for s in store.journal(pid)] == [1, 2]
    with pg.begin() as conn:  # a step journaled behind the store's back: the next seq is taken
        conn.execute(
            text(
                "INSERT INTO process_journal (pid, seq, kind, payload, created_at_us) "
                "VALUES (:p, 3, 'note', '{}', 0)"
            ),
            {"p": pid},
        )
    with pytest.raises(AccountError, match="stepped by two workers"):
        store.append(pid, "note", {"n": 3})
    assert store.get(pid).steps == 2, "the process's count is undone with the journal entry"
    store.set_state(pid, "killed", reason="test")
    with pytest.raises(AccountError, match="has ended"):
        store.append(pid, "note", {"n": 4})


def _drop_all(engine: Engine) -> None:
    """What a restarted or failed-over database does to every connection of this database."""
    with engine.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        conn.commit()


def test_a_connection_the_server_dropped_is_replaced(pg: Engine) -> None:
    store, pid = _process(pg)
    store.get(pid)
    _drop_all(pg)
    failures = 0
    for _ in range(2):
        try:
            store.get(pid)
        except Exception:  # the one call on the dropped connection may fail
            failures += 1
    assert failures <= 1
    assert store.get(pid).pid == pid and store.append(pid, "note", {}).steps == 1


def test_each_thread_keeps_one_connection_and_disposing_closes_them(pg: Engine) -> None:
    store, pid = _process(pg)
    threads = [threading.Thread(target=lambda: [store.get(pid) for _ in range(3)]) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.get(pid)
    assert _kept(pg) >= 4, "three threads and this one"
    pg.dispose()
    assert _kept(pg) == 0
    assert server_connections(pg) is server_connections(pg), "one set of connections per engine"


async def test_a_loop_connection_the_server_dropped_is_replaced(pg: Engine) -> None:
    store, pid = _process(pg)
    await store.aget(pid)
    _drop_all(pg)
    failures = 0
    for _ in range(2):
        try:
            await store.aget(pid)
        except Exception:  # the one call on the dropped connection may fail
            failures += 1
    assert failures <= 1
    assert (await store.aget(pid)).pid == pid and (await store.aappend(pid, "note", {})).steps == 1


async def test_an_idle_loop_connection_is_checked_before_use(
    pg: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, pid = _process(pg)
    await store.aget(pid)
    kept = loop_connections(pg)
    assert kept is not None and kept is loop_connections(pg), "one set of connections per engine"
    monkeypatch.setattr(kept, "IDLE_PING_S", 0.0)  # every use finds it idle for long enough
    _drop_all(pg)
    assert (await store.aappend(pid, "note", {})).steps == 1, "no step lost to the dropped connection"


async def test_a_loop_keeps_one_connection_and_disposing_closes_it(pg: Engine) -> None:
    store, pid = _process(pg)
    pg.dispose()  # the connections the set-up used
    await asyncio.gather(*(store.aget(pid) for _ in range(20)), store.aappend(pid, "note", {}))
    assert _kept(pg) == 1, "the loop's own connection, and no thread's"
    pg.dispose()
    assert _kept(pg) == 0
    assert (await store.aget(pid)).steps == 1, "a disposed engine's store connects again when used"
