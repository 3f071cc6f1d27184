"""The ledger: journaled group commit, replay after a kill, and a database that fails."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from aigrid.store.db import make_engine, migrate
from aigrid.store.ledger import Ledger, LedgerUnavailable, recover_interrupted, replay_journal
from aigrid.store.schema import LedgerEntry


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    eng = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    migrate(eng)
    return eng


def _row(row_id: str, status: str = "in_progress") -> dict[str, Any]:
    return {
        "id": row_id,
        "created_at_us": 1,
        "tenant_id": 1,
        "endpoint": "chat",
        "model": "m",
        "status": status,
    }


def _rows(engine: Engine) -> dict[str, LedgerEntry]:
    with Session(engine) as session:
        return {r.id: r for r in session.scalars(select(LedgerEntry))}


async def test_written_rows_reach_the_database(engine: Engine, tmp_path: Path) -> None:
    ledger = Ledger(engine, tmp_path / "journal")
    ledger.start()
    await ledger.write({**_row("a"), "status": "ok", "prompt_tokens": 3, "cost_micro": 11})
    await ledger.flush()
    row = _rows(engine)["a"]
    assert (row.status, row.prompt_tokens, row.completion_tokens, row.cost_micro) == ("ok", 3, 0, 11)
    await ledger.aclose()
    assert list((tmp_path / "journal").iterdir()) == [], "a clean stop leaves no journal behind"


async def test_concurrent_requests_share_journal_writes(engine: Engine, tmp_path: Path) -> None:
    ledger = Ledger(engine, tmp_path / "journal")
    ledger.start()

    async def one(i: int) -> None:
        await asyncio.sleep(0)
        await ledger.write(_row(f"r{i}", "ok"))

    await asyncio.gather(*(one(i) for i in range(300)))
    assert ledger.batches <= 3
    await ledger.flush()
    assert len(_rows(engine)) == 300
    await ledger.aclose()


async def test_progress_then_close_end_in_one_row(engine: Engine, tmp_path: Path) -> None:
    ledger = Ledger(engine, tmp_path / "journal")
    ledger.start()
    await ledger.write(_row("s"))
    ledger.progress("s", {"completion_tokens": 5})
    await ledger.flush()
    assert _rows(engine)["s"].completion_tokens == 5
    ledger.progress("s", {"completion_tokens": 9})
    await ledger.close("s", {"status": "ok", "latency_us": 7})
    await ledger.flush()
    row = _rows(engine)["s"]
    assert (row.status, row.completion_tokens, row.latency_us) == ("ok", 9, 7)
    await ledger.aclose()


async def test_what_a_killed_server_journaled_is_replayed_once(engine: Engine, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    killed = Ledger(engine, journal)
    killed.start()
    with engine.begin() as conn:  # the database falls behind the journal, then the server dies
        conn.execute(text("ALTER TABLE ledger RENAME TO ledger_away"))
    await killed.write({**_row("x"), "completion_tokens": 4})
    killed.progress("x", {"completion_tokens": 6})
    await killed.close("y", {"status": "ok"})  # an update of a row the database never saw
    await asyncio.sleep(0)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE ledger_away RENAME TO ledger"))
    assert any(journal.iterdir())
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in journal.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert replay_journal(engine, journal) == 3
    assert replay_journal(engine, copy) == 3, "a segment applied twice changes nothing"
    rows = _rows(engine)
    assert set(rows) == {"x"} and rows["x"].completion_tokens == 6
    assert recover_interrupted(engine) == 1 and _rows(engine)["x"].status == "interrupted"
    assert not any(journal.iterdir())


async def test_a_failing_database_delays_readers_not_requests(engine: Engine, tmp_path: Path) -> None:
    ledger = Ledger(engine, tmp_path / "journal")
    ledger.start()
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE ledger RENAME TO ledger_away"))
    await asyncio.wait_for(ledger.write(_row("kept", "ok")), 2)
    with pytest.raises(LedgerUnavailable):
        await ledger.flush(wait_s=0.3)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE ledger_away RENAME TO ledger"))
    await ledger.flush(wait_s=5)
    assert _rows(engine)["kept"].status == "ok"
    await ledger.aclose()


async def test_an_unwritable_journal_refuses_the_answer(engine: Engine, tmp_path: Path) -> None:
    ledger = Ledger(engine, tmp_path / "journal")
    ledger.start()
    ledger._fd = 10_000  # a descriptor that is not open: every write fails
    with pytest.raises(LedgerUnavailable):
        await ledger.write(_row("lost", "ok"))


def test_recover_marks_rows_left_in_progress_as_interrupted(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger (id, created_at_us, tenant_id, endpoint, model, stream, prompt_tokens, "
                "completion_tokens, cached_tokens, cost_micro, status) "
                "VALUES ('x', 1, 1, 'chat', 'm', 1, 5, 7, 0, 0, 'in_progress')"
            )
        )
    assert recover_interrupted(engine) == 1
    assert _rows(engine)["x"].status == "interrupted" and _rows(engine)["x"].completion_tokens == 7
    assert recover_interrupted(engine) == 0


async def test_an_operation_the_database_refuses_is_set_aside_not_blocking(
    engine: Engine, tmp_path: Path
) -> None:
    ledger = Ledger(engine, tmp_path / "journal")
    ledger.start()
    ledger.add({"id": "poison", "created_at_us": 1})  # no tenant, no model: NOT NULL refuses it
    await ledger.write(_row("good", "ok"))
    await ledger.flush()
    await ledger.write(_row("later", "ok"))
    await ledger.flush()
    assert set(_rows(engine)) == {"good", "later"}
    assert b'"poison"' in (tmp_path / "journal" / "rejected.jsonl").read_bytes()
    await ledger.aclose()
