"""The ledger writer: group commit, merging of updates, recovery, and a database that fails."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from aigrid.store.db import make_engine, migrate
from aigrid.store.ledger import Ledger, LedgerUnavailable, recover_interrupted
from aigrid.store.schema import LedgerEntry


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    eng = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    migrate(eng)
    return eng


def _row(row_id: str) -> dict[str, Any]:
    return {
        "id": row_id,
        "created_at_us": 1,
        "tenant_id": 1,
        "endpoint": "chat",
        "model": "m",
        "status": "in_progress",
    }


def _rows(engine: Engine) -> dict[str, LedgerEntry]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        return {r.id: r for r in session.scalars(select(LedgerEntry))}


async def test_close_returns_only_after_the_row_is_committed(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.start()
    ledger.open(_row("a"))
    await ledger.close("a", {"status": "ok", "prompt_tokens": 3, "completion_tokens": 4, "cost_micro": 11})
    row = _rows(engine)["a"]
    assert (row.status, row.prompt_tokens, row.completion_tokens, row.cost_micro) == ("ok", 3, 4, 11)
    ledger.stop()


async def test_concurrent_closes_share_transactions(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.start()

    async def one(i: int) -> None:
        ledger.open(_row(f"r{i}"))
        await asyncio.sleep(0)
        await ledger.close(f"r{i}", {"status": "ok"})

    await asyncio.gather(*(one(i) for i in range(300)))
    assert len(_rows(engine)) == 300
    assert ledger.batches < 30
    ledger.stop()


async def test_progress_then_close_merge_into_one_row(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.start()
    ledger.open(_row("s"))
    await ledger.flush()
    ledger.progress("s", {"completion_tokens": 5})
    ledger.progress("s", {"completion_tokens": 9})
    await ledger.close("s", {"status": "ok", "latency_us": 7})
    row = _rows(engine)["s"]
    assert (row.status, row.completion_tokens, row.latency_us) == ("ok", 9, 7)
    ledger.stop()


async def test_stop_writes_what_is_queued(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.start()
    ledger.open(_row("late"))
    ledger.stop()
    assert "late" in _rows(engine)


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
    assert _rows(engine)["x"].status == "interrupted"
    assert _rows(engine)["x"].completion_tokens == 7
    assert recover_interrupted(engine) == 0


async def test_a_failing_database_keeps_the_readings_and_tells_the_waiters(engine: Engine) -> None:
    ledger = Ledger(engine, fail_after_s=0.3)
    ledger.start()
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE ledger RENAME TO ledger_away"))
    ledger.open(_row("kept"))
    with pytest.raises(LedgerUnavailable):
        await asyncio.wait_for(ledger.close("kept", {"status": "ok"}), 5)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE ledger_away RENAME TO ledger"))
    await asyncio.wait_for(ledger.flush(), 5)
    assert _rows(engine)["kept"].status == "ok"
    ledger.stop()
