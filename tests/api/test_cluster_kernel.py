"""Two aigrid servers on one real PostgreSQL step processes: a killed server's processes are taken
up by the other within the lease plus one poll, a paused one commits nothing once woken, and no
step is journaled twice."""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from tests.postgres import Postgres
from tests.support import LiveServer, RecordingUpstream, mock_config, until

from aigrid.store.db import make_engine
from aigrid.store.schema import ClusterNode, JournalEntry, ProcessRow

pytestmark = pytest.mark.slow

# Short, so that the tests take seconds; AIGRID_TAKEOVER_LEASE_S=15 AIGRID_TAKEOVER_RENEW_S=5 measures
# the takeover with the defaults.
LEASE_S = float(os.environ.get("AIGRID_TAKEOVER_LEASE_S", "3"))
RENEW_S = float(os.environ.get("AIGRID_TAKEOVER_RENEW_S", "0.5"))
AGENT = {"name": "writer", "instructions": "Write one line.", "model": "mock"}
# Where the figures go, for the report (bench/README quotes them).
FIGURES = Path(os.environ.get("AIGRID_TAKEOVER_FIGURES", "/tmp/aigrid-takeover.json"))


def _config(upstream: str, database_url: str, node: str) -> str:
    cluster = f'[cluster]\nnode = "{node}"\nlease_s = {LEASE_S}\nrenew_s = {RENEW_S}\n'
    return mock_config(upstream, extra=f'database_url = "{database_url}"\n{cluster}')


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    made = RecordingUpstream()
    yield made
    made.stop()


def _spawn(server: LiveServer, key: str, n: int) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"}
    pids = []
    for i in range(n):
        started = httpx.post(
            server.url + "/v1/processes",
            headers=headers,
            json={"agent": "writer", "input": f"line {i}"},
            timeout=30,
        )
        assert started.status_code == 201, started.text
        pids.append(started.json()["pid"])
    return pids


def _rows(engine: Engine, pids: list[str]) -> dict[str, Any]:
    with engine.connect() as conn:
        query = select(ProcessRow).where(ProcessRow.pid.in_(pids))
        return {r.pid: r for r in conn.execute(query)}


def _journals(engine: Engine, pids: list[str]) -> dict[str, list[tuple[int, str]]]:
    with engine.connect() as conn:
        query = select(JournalEntry.pid, JournalEntry.seq, JournalEntry.kind).where(
            JournalEntry.pid.in_(pids)
        )
        found: dict[str, list[tuple[int, str]]] = {pid: [] for pid in pids}
        for pid, seq, kind in conn.execute(query.order_by(JournalEntry.pid, JournalEntry.seq)):
            found[pid].append((seq, kind))
    return found


def _node_id(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(ClusterNode.id).where(ClusterNode.name == name)).scalar_one())


def _each_step_once(engine: Engine, pids: list[str], owner: int) -> None:
    rows = _rows(engine, pids)
    assert {r.state for r in rows.values()} == {"done"}
    assert {r.owner_node_id for r in rows.values()} == {owner}
    once = [(1, "model_request"), (2, "model_response")]
    assert all(journal == once for journal in _journals(engine, pids).values()), _journals(engine, pids)


def test_a_killed_servers_processes_are_taken_up_within_the_lease_and_stepped_once(
    postgres: Postgres, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    url = postgres.new_database()
    engine = make_engine(url)
    alpha = LiveServer(tmp_path / "a", _config(upstream.url, url, "alpha")).start()
    beta = LiveServer(tmp_path / "b", _config(upstream.url, url, "beta")).start()
    takeovers: list[float] = []
    try:
        key = alpha.new_tenant_key("acme")
        created = httpx.post(
            alpha.url + "/v1/agents", headers={"Authorization": f"Bearer {key}"}, json=AGENT, timeout=30
        )
        assert created.status_code == 201, created.text
        beta_id = _node_id(engine, "beta")
        every: list[str] = []
        for _ in range(3):
            upstream.delay_s = 2.0  # alpha's model calls are in flight when it is killed
            asked = len(upstream.requests) + 6
            pids = _spawn(alpha, key, 6)
            every += pids
            until(lambda: len(upstream.requests) >= asked, "alpha calls the model for each")  # noqa: B023
            alpha.kill()
            killed = time.monotonic()
            upstream.delay_s = 0.0
            until(
                lambda: {r.owner_node_id for r in _rows(engine, pids).values()} == {beta_id},  # noqa: B023
                "beta owns every process",
                every_s=0.02,
            )
            takeovers.append(time.monotonic() - killed)
            until(lambda: {r.state for r in _rows(engine, pids).values()} == {"done"}, "all done")  # noqa: B023
            alpha.start()  # back, with a new epoch, for the next round
        _each_step_once(engine, every, beta_id)
    finally:
        beta.stop()
        alpha.stop()
        engine.dispose()
    figures = {
        "lease_s": LEASE_S,
        "renew_s": RENEW_S,
        "takeover_s": [round(t, 3) for t in takeovers],
        "p50_s": round(statistics.median(takeovers), 3),
        "max_s": round(max(takeovers), 3),
    }
    FIGURES.write_text(json.dumps(figures))
    print("takeover after SIGKILL:", figures)
    # The bound: the lease runs out at most lease_s after the kill, and a peer polls every renew_s.
    assert max(takeovers) <= LEASE_S + RENEW_S + 1.0, figures


def test_a_server_paused_past_three_leases_commits_nothing_once_woken(
    postgres: Postgres, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    url = postgres.new_database()
    engine = make_engine(url)
    alpha = LiveServer(tmp_path / "a", _config(upstream.url, url, "alpha")).start()
    beta = LiveServer(tmp_path / "b", _config(upstream.url, url, "beta")).start()
    try:
        key = alpha.new_tenant_key("acme")
        created = httpx.post(
            alpha.url + "/v1/agents", headers={"Authorization": f"Bearer {key}"}, json=AGENT, timeout=30
        )
        assert created.status_code == 201, created.text
        beta_id = _node_id(engine, "beta")
        upstream.delay_s = 1.0
        pids = _spawn(alpha, key, 5)
        until(lambda: len(upstream.requests) >= len(pids), "alpha calls the model for each")
        assert alpha.proc is not None
        os.kill(alpha.proc.pid, signal.SIGSTOP)
        try:
            # Beta's own calls take long: they are still in flight when alpha wakes, so alpha's
            # late answers meet processes that run on, owned by beta.
            upstream.delay_s = 3 * LEASE_S + 6.0
            until(
                lambda: {r.owner_node_id for r in _rows(engine, pids).values()} == {beta_id},
                "beta takes the processes up",
            )
            time.sleep(3 * LEASE_S)
        finally:
            os.kill(alpha.proc.pid, signal.SIGCONT)
        until(lambda: alpha.log().count("a step's write was refused") >= len(pids), "alpha's writes refused")
        assert {r.state for r in _rows(engine, pids).values()} == {"running"}, "beta's calls still run"
        assert all(j == [] for j in _journals(engine, pids).values()), "alpha journaled nothing"
        until(lambda: {r.state for r in _rows(engine, pids).values()} == {"done"}, "beta finishes them")
        _each_step_once(engine, pids, beta_id)
        assert "is fenced: its lease ended" in alpha.log()
    finally:
        beta.stop()
        alpha.stop()
        engine.dispose()
