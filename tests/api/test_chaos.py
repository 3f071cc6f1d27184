"""Chaos: three aigrid servers on one PostgreSQL, clients spread over them, one server SIGKILLed at
random moments, round after round. Nothing the clients received is lost or counted twice."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from tests.postgres import Postgres
from tests.support import LiveServer, mock_config

from aigrid.store.db import make_engine
from aigrid.store.schema import LedgerEntry

pytestmark = pytest.mark.slow

LEASE_S = 3.0
NODES = ("alpha", "beta", "gamma")
ROUNDS = 4
SEED = 20261207


def _config(upstream: str, database_url: str, node: str) -> str:
    cluster = f'[cluster]\nnode = "{node}"\nlease_s = {LEASE_S}\nrenew_s = 0.5\nsync_s = 0.5\n'
    return mock_config(upstream, extra=f'database_url = "{database_url}"\n{cluster}')


@dataclass
class Cluster:
    """Three live servers on one database, each restartable on its own data directory."""

    url: str
    servers: list[LiveServer]
    kills: list[str] = field(default_factory=list)

    def urls(self) -> Iterator[str]:
        """The servers' base URLs, round robin, forever."""
        return itertools.cycle([s.url for s in self.servers])

    def kill_and_restart(self, rng: random.Random) -> None:
        """SIGKILL one server at random; start it again on its data directory."""
        victim = rng.choice(self.servers)
        victim.kill()
        self.kills.append(victim.url)
        time.sleep(rng.uniform(0.2, 1.0))
        victim.start()

    def ledger(self) -> dict[str, tuple[str, int]]:
        """Every ledger row in the shared database: request id to (status, completion tokens)."""
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(select(LedgerEntry.id, LedgerEntry.status, LedgerEntry.completion_tokens))
                return {r.id: (r.status, r.completion_tokens) for r in rows}
        finally:
            engine.dispose()


@pytest.fixture
def cluster(postgres: Postgres, mock_upstream: str, tmp_path: Path) -> Iterator[Cluster]:
    """Three servers named alpha, beta and gamma on a new database; stopped gracefully at the end."""
    url = postgres.new_database()
    servers = [LiveServer(tmp_path / n, _config(mock_upstream, url, n)) for n in NODES]
    try:
        for server in servers:
            server.start()
        yield Cluster(url, servers)
    finally:
        for server in servers:
            server.stop()


@dataclass
class Received:
    """What the clients got: complete answers, and answers cut off by a kill."""

    complete: set[str] = field(default_factory=set)
    cut_off: set[str] = field(default_factory=set)
    refused: int = 0


async def _client(urls: Iterator[str], key: str, n: int, stop: threading.Event, got: Received) -> None:
    """One client: chat requests (every other one streamed), each to the next server in turn."""
    stream = n % 2 == 0
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        while not stop.is_set():
            request_id = None
            try:
                async with client.stream("POST", next(urls) + "/v1/chat/completions", json=body) as resp:
                    request_id = resp.headers.get("x-request-id")
                    data = b"".join([chunk async for chunk in resp.aiter_bytes()])
                    if resp.status_code != 200 or request_id is None:
                        got.refused += 1
                        await asyncio.sleep(0.05)
                        continue
                    done = data.rstrip().endswith(b"data: [DONE]") if stream else data.endswith(b"}")
                    (got.complete if done else got.cut_off).add(request_id)
            except httpx.HTTPError:
                if request_id is not None:
                    got.cut_off.add(request_id)
                await asyncio.sleep(0.05)  # a killed server: the next request goes to the next one


def test_a_server_killed_again_and_again_loses_no_reading_and_counts_none_twice(cluster: Cluster) -> None:
    rng = random.Random(SEED)
    key = cluster.servers[0].new_tenant_key("chaos")
    got = Received()
    stop = threading.Event()

    def chaos() -> None:
        try:
            for _ in range(ROUNDS):
                time.sleep(rng.uniform(0.5, 2.0))
                cluster.kill_and_restart(rng)
            time.sleep(1.0)
        finally:
            stop.set()

    async def load() -> None:
        urls = cluster.urls()
        await asyncio.gather(*(_client(urls, key, n, stop, got) for n in range(12)))

    killer = threading.Thread(target=chaos)
    killer.start()
    asyncio.run(load())
    killer.join()
    assert len(cluster.kills) == ROUNDS
    assert len(got.complete) > 100, "the load did not get going"
    for server in cluster.servers:
        server.stop()  # a graceful stop applies each server's journal and closes its lease

    ledger = cluster.ledger()
    lost = [rid for rid in got.complete if rid not in ledger]
    assert not lost, f"{len(lost)} of {len(got.complete)} answers the clients received are not in the ledger"
    wrong = {rid: ledger[rid] for rid in got.complete if ledger[rid] != ("ok", 16)}
    assert not wrong, f"answers received but metered otherwise: {list(wrong.items())[:5]}"
    assert all(ledger[rid][0] in ("ok", "interrupted") for rid in got.cut_off if rid in ledger)
    assert not [rid for rid, (status, _) in ledger.items() if status == "in_progress"]
