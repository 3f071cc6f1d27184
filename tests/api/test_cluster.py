"""Two aigrid servers on one real PostgreSQL: they see each other, a paused one is fenced, and
recovery at start leaves a live peer's streams alone."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select
from tests.postgres import Postgres
from tests.support import LiveServer, aigrid, mock_config, until

from aigrid.store.cluster import ClusterStore, Owner
from aigrid.store.db import make_engine
from aigrid.store.schema import LedgerEntry

pytestmark = pytest.mark.slow

LEASE_S = 3.0


def _config(upstream: str, database_url: str, node: str) -> str:
    cluster = f'[cluster]\nnode = "{node}"\nlease_s = {LEASE_S}\nrenew_s = 0.5\naddress = "{node}.example"\n'
    return mock_config(upstream, extra=f'database_url = "{database_url}"\n{cluster}')


def _beta(tmp_path: Path, upstream: str, database_url: str) -> LiveServer:
    """The second server: its config names it "ignored", and --cluster (which wins) "beta"."""
    config = _config(upstream, database_url, "ignored").replace("ignored.example", "beta.example")
    return LiveServer(tmp_path / "b", config, serve_args=("--cluster", "beta"))


def _nodes(server: LiveServer) -> dict[str, dict[str, Any]]:
    answer = server.admin("GET", "/admin/cluster")
    assert answer.status_code == 200, answer.text
    return {n["name"]: n for n in answer.json()["data"]}


def _health(server: LiveServer) -> httpx.Response:
    return httpx.get(server.url + "/healthz", timeout=5)


def test_two_servers_see_each_other_and_one_paused_past_its_lease_is_fenced(
    postgres: Postgres, mock_upstream: str, tmp_path: Path
) -> None:
    url = postgres.new_database()
    alpha = LiveServer(tmp_path / "a", _config(mock_upstream, url, "alpha")).start()
    beta = _beta(tmp_path, mock_upstream, url)
    try:
        beta.start()
        seen = _nodes(alpha)
        assert {n: (v["live"], v["self"], v["address"]) for n, v in seen.items()} == {
            "alpha": (True, True, "alpha.example"),
            "beta": (True, False, "beta.example"),
        }
        assert seen["beta"]["lease_left_s"] <= LEASE_S and seen["beta"]["heartbeat_age_s"] < LEASE_S
        assert seen["alpha"]["load"]["requests_in_flight"] == 0
        assert httpx.get(alpha.url + "/admin/cluster", timeout=5).status_code == 401
        # Both serve, metering into the one database.
        for server in (alpha, beta):
            server.openai().chat.completions.create(
                model="mock", messages=[{"role": "user", "content": "hi"}]
            )
        usage = beta.admin("GET", "/v1/usage", params={"tenant": "admin"}).json()
        assert usage["totals"]["requests"] == 2

        shown = aigrid(alpha, "cluster")
        assert shown.returncode == 0, shown.stderr
        assert "alpha (this one)" in shown.stdout and "beta" in shown.stdout
        assert "2 of 2 node(s) live" in shown.stdout
        as_json = json.loads(aigrid(alpha, "cluster", "--json").stdout)
        assert [n["name"] for n in as_json["data"]] == ["alpha", "beta"]

        before = _health(beta).json()
        assert before["status"] == "ok" and before["node"] == "beta" and before["fenced"] == 0
        assert beta.proc is not None
        os.kill(beta.proc.pid, signal.SIGSTOP)
        try:
            until(lambda: not _nodes(alpha)["beta"]["live"], "alpha sees beta's lease run out")
            time.sleep(LEASE_S)  # paused well past its lease, as a zombie would be
        finally:
            os.kill(beta.proc.pid, signal.SIGCONT)
        # Woken, beta finds its epoch fenced and rejoins with the next one.
        until(
            lambda: _health(beta).json().get("epoch") == before["epoch"] + 1, "beta rejoins with a new epoch"
        )
        after = _health(beta)
        assert after.status_code == 200 and after.json()["fenced"] == 1
        assert "is fenced: its lease ended" in beta.log()
        until(lambda: _nodes(alpha)["beta"]["live"], "alpha sees beta live again")
        assert _nodes(alpha)["beta"]["epoch"] == before["epoch"] + 1
        # Nothing can be written as the old epoch any more.
        engine = make_engine(url)
        try:
            old = Owner(seen["beta"]["id"], before["epoch"])
            assert ClusterStore(engine).renew(old, LEASE_S, {}) == f"superseded by epoch {old.epoch + 1}"
        finally:
            engine.dispose()
        assert _nodes(alpha)["alpha"]["epoch"] == seen["alpha"]["epoch"], "alpha was never fenced"
    finally:
        beta.stop()
        alpha.stop()


def _in_progress_row(url: str, row_id: str, owner: Owner) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(LedgerEntry).values(
                    id=row_id,
                    created_at_us=time.time_ns() // 1000,
                    tenant_id=1,
                    endpoint="chat",
                    model="mock",
                    stream=True,
                    status="in_progress",
                    node_id=owner.node_id,
                    node_epoch=owner.epoch,
                )
            )
    finally:
        engine.dispose()


def _statuses(url: str) -> dict[str, str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {r.id: r.status for r in conn.execute(select(LedgerEntry.id, LedgerEntry.status))}
    finally:
        engine.dispose()


def test_recovery_leaves_a_live_peers_stream_alone_and_marks_a_dead_ones(
    postgres: Postgres, mock_upstream: str, tmp_path: Path
) -> None:
    url = postgres.new_database()
    alpha = LiveServer(tmp_path / "a", _config(mock_upstream, url, "alpha")).start()
    beta = _beta(tmp_path, mock_upstream, url)
    try:
        beta.start()
        nodes = _nodes(alpha)
        # A stream alpha is serving, and one beta was serving when it is killed and restarted.
        _in_progress_row(url, "alpha-stream", Owner(nodes["alpha"]["id"], nodes["alpha"]["epoch"]))
        _in_progress_row(url, "beta-stream", Owner(nodes["beta"]["id"], nodes["beta"]["epoch"]))
        beta.kill()
        beta.start()
        assert _statuses(url) == {"alpha-stream": "in_progress", "beta-stream": "interrupted"}
        # Marked by beta's recovery at its restart, or by alpha's sweep if beta's old lease ended
        # before beta was back; alpha's own stream by neither.
        said = "1 request(s) cut off by a stopped server" in beta.log()
        assert said or "1 request(s) of servers whose lease ended" in alpha.log()
        # Killed, alpha never comes back: once its lease ends, beta's sweep marks its stream.
        alpha.kill()
        assert _statuses(url)["alpha-stream"] == "in_progress", "alpha's lease still runs"
        until(lambda: _statuses(url)["alpha-stream"] == "interrupted", "beta marks alpha's stream")
        assert not _nodes(beta)["alpha"]["live"]
        assert "of servers whose lease ended as interrupted" in beta.log()
    finally:
        beta.stop()
        alpha.stop()
