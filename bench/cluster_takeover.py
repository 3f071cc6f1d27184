"""bench/cluster.py's takeover phase: SIGKILL a server with a stream open, time what a peer sees."""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from cluster_rig import HOST, Rig, Server, free_port, ok, start_server, tenant_key, wait_for

LIVE_STATES = ("running", "waiting_tool", "ready", "waiting_approval", "sleeping", "suspended")


FIRST_CHUNK = (
    b'data: {"id": "chatcmpl-hold", "object": "chat.completion.chunk", "created": 0, "model": "mock",'
    b' "choices": [{"index": 0, "delta": {"role": "assistant", "content": "tok "},'
    b' "finish_reason": null}]}\n\n'
)


class HoldingUpstream:
    """An upstream whose streamed answers send their first chunk and then nothing more: a stream
    that stays open until the client goes (a plain answer never comes at all). The shared mock
    delays a whole answer, headers included, and a stream's ledger row is written once it opens."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, name="holding-upstream", daemon=True).start()
        if not self._ready.wait(10):
            raise RuntimeError("the holding upstream did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, HOST, self.port))
        self._ready.set()
        with suppress(RuntimeError):
            self._loop.run_until_complete(server.serve_forever())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length)
            if b'"stream": true' in body or b'"stream":true' in body:
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                    + f"{len(FIRST_CHUNK):x}\r\n".encode()
                    + FIRST_CHUNK
                    + b"\r\n"
                )
                await writer.drain()
            await reader.read()  # until the client hangs up
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


@dataclass
class Round:
    not_live_s: float | None
    interrupted_s: float | None
    process_s: float | str | None  # str: why it was not measured


def node_of(rig: Rig, server: Server, name: str) -> dict[str, Any] | None:
    answer = httpx.get(server.url + "/admin/cluster", headers=rig.admin(), timeout=5)
    answer.raise_for_status()
    return next((n for n in answer.json()["data"] if n["name"] == name), None)


def ledger_status(dsn: str, node_id: int, epoch: int) -> list[str]:
    """Statuses of the ledger rows a node's epoch wrote."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT status FROM ledger WHERE node_id = %s AND node_epoch = %s", (node_id, epoch)
        )
        return [r[0] for r in rows]


def owner_column(dsn: str) -> bool:
    """Whether kernel processes carry an owning node yet (processes.owner_node_id)."""
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'processes' AND column_name = 'owner_node_id'"
        ).fetchone()
    return found is not None


def spawn_process(server: Server, key: str) -> str | None:
    """A kernel process on ``server`` that stays running (its model call never gets an answer)."""
    auth = {"Authorization": f"Bearer {key}"}
    spec = {"name": "waiter", "instructions": "Wait.", "model": "slow", "tools": []}
    httpx.post(server.url + "/v1/agents", json=spec, headers=auth, timeout=10)  # 409 once it exists
    r = httpx.post(
        server.url + "/v1/processes", json={"agent": "waiter", "input": "go"}, headers=auth, timeout=10
    )
    return str(r.json()["pid"]) if r.status_code in (200, 201) else None


def process_takeover_s(
    dsn: str, victim_node_id: int, pid: str | None, killed_at: float, timeout_s: float
) -> float | str:
    """Seconds from the kill until the victim's process is owned by another node (or has ended).

    The hook for kernel work leasing: it polls ``processes.owner_node_id`` of the process the victim
    ran. Without that column (not built yet) it says so instead of timing anything.
    """
    if not owner_column(dsn):
        return "not built"
    if pid is None:
        return "no process could be started on the victim"
    deadline = killed_at + timeout_s
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT owner_node_id, state FROM processes WHERE pid = %s", (pid,)).fetchone()
            if row is None or row[0] != victim_node_id or row[1] not in LIVE_STATES:
                return time.monotonic() - killed_at
            time.sleep(0.05)
    return f"not taken over within {timeout_s:g} s"


def hold_stream(server: Server, key: str, stop: threading.Event) -> None:
    """A streamed request to model ``slow`` that stays open until the server dies or ``stop`` is set."""
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "wait"}]}
    with (
        suppress(httpx.HTTPError),
        httpx.stream(
            "POST",
            server.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=None,
        ) as r,
    ):
        for _ in r.iter_bytes():
            if stop.is_set():
                return


@dataclass
class Cycle:
    """What every takeover round shares."""

    rig: Rig
    dsn: str
    database_url: str
    observer: Server
    key: str
    lease_s: float
    renew_s: float
    configured_lease_s: float | None


def takeover_round(cycle: Cycle) -> Round:
    """Start the victim, open a stream through it, SIGKILL it, and time what the observer sees."""
    rig, dsn, auth = cycle.rig, cycle.dsn, {"Authorization": f"Bearer {cycle.key}"}
    victim = start_server(rig, cycle.database_url, "victim", cycle.configured_lease_s)
    stop = threading.Event()
    try:
        wait_for(lambda: ok(victim.url + "/v1/models", auth), 30, "the key on the victim")
        node = node_of(rig, victim, "victim")  # this epoch's id and number, as the victim has them
        assert node is not None
        node_id, epoch = int(node["id"]), int(node["epoch"])
        threading.Thread(target=hold_stream, args=(victim, cycle.key, stop), daemon=True).start()
        wait_for(lambda: "in_progress" in ledger_status(dsn, node_id, epoch), 30, "the stream's ledger row")
        pid = spawn_process(victim, cycle.key) if owner_column(dsn) else None
        time.sleep(random.uniform(0, cycle.renew_s))  # anywhere in the renewal cycle
        killed_at = time.monotonic()
        victim.proc.kill()
        not_live = interrupted = None
        deadline = killed_at + 2 * cycle.lease_s + 15
        while (not_live is None or interrupted is None) and time.monotonic() < deadline:
            now = time.monotonic() - killed_at
            seen = node_of(rig, cycle.observer, "victim")
            if not_live is None and seen is not None and not seen["live"]:
                not_live = now
            if interrupted is None and "interrupted" in ledger_status(dsn, node_id, epoch):
                interrupted = now
            time.sleep(0.05)
        process = process_takeover_s(dsn, node_id, pid, killed_at, 2 * cycle.lease_s + 15)
        return Round(not_live, interrupted, process)
    finally:
        stop.set()
        rig.procs.stop(victim.proc)


def takeover(rig: Rig, args: argparse.Namespace) -> tuple[list[Round], float, float]:
    """Rounds of takeover_round against one observer on a fresh database."""
    database_url = rig.new_database()
    dsn = f"host={HOST} port={rig.pg.port} user=aigrid dbname={database_url.rsplit('/', 1)[1]}"
    observer = start_server(rig, database_url, "observer", args.lease_s)
    rounds: list[Round] = []
    try:
        lease = httpx.get(observer.url + "/admin/cluster", headers=rig.admin(), timeout=5).json()
        key = tenant_key(rig, [observer], "takeover")
        cycle = Cycle(
            rig,
            dsn,
            database_url,
            observer,
            key,
            float(lease["lease_s"]),
            float(lease["renew_s"]),
            args.lease_s,
        )
        for n in range(args.rounds):
            rounds.append(takeover_round(cycle))
            last = rounds[-1]
            print(
                f"  takeover round {n + 1}: not live after {_s(last.not_live_s)},"
                f" ledger row interrupted after {_s(last.interrupted_s)}",
                file=sys.stderr,
            )
    finally:
        rig.procs.stop(observer.proc)
    return rounds, cycle.lease_s, cycle.renew_s


def _s(value: float | str | None) -> str:
    if isinstance(value, str):
        return value
    return "—" if value is None else f"{value:.2f} s"


def report_takeover(rounds: list[Round], lease_s: float, renew_s: float) -> list[str]:
    target = lease_s + 5

    def summary(values: list[float | None]) -> str:
        got = [v for v in values if v is not None]
        missed = len(values) - len(got)
        if not got:
            return "never seen"
        text = f"p50 {statistics.median(got):.2f} s, max {max(got):.2f} s"
        verdict = "within" if max(got) <= target and not missed else "beyond"
        return (
            text
            + f" ({verdict} lease + 5 s = {target:g} s)"
            + (f"; {missed} round(s) never" if missed else "")
        )

    processes = [r.process_s for r in rounds]
    timed = [p for p in processes if isinstance(p, float)]
    words = sorted({p for p in processes if isinstance(p, str)})
    lines = [
        "",
        f"## takeover after SIGKILL: {len(rounds)} round(s), lease_s {lease_s:g}, renew_s {renew_s:g}",
        f"peer shows it not live:          {summary([r.not_live_s for r in rounds])}",
        f"its stream's row 'interrupted':  {summary([r.interrupted_s for r in rounds])}",
        f"its kernel process taken over:   {summary(list(timed)) if timed else ', '.join(words) or '—'}",
    ]
    return lines
