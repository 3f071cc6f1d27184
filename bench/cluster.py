#!/usr/bin/env python3
"""Several aigrid servers on one PostgreSQL: gateway throughput of 1 against 3 servers, and takeover.

    PYTHONPATH=src .venv/bin/python bench/cluster.py                  # about 3-4 minutes on 2 cores
    PYTHONPATH=src .venv/bin/python bench/cluster.py --seconds 20 --rounds 5
    PYTHONPATH=src .venv/bin/python bench/cluster.py --skip-takeover  # throughput only
    PYTHONPATH=src .venv/bin/python bench/cluster.py --skip-gateway --skip-kernel --lease-s 3

It starts a throwaway PostgreSQL (examples/cluster/run.py's, from Debian's server binaries) and
the shared mock upstream, then:

* gateway: 1 server, then 3 servers (each on a fresh database), every one serving model ``mock``
  from the fast mock. wrk loads them with a tenant key (auth, budgets and metering on the path),
  the connections spread round-robin over the servers (one wrk per server, run at once). It prints
  req/s, p50/p99, each server's CPU seconds during the run, and, since on a small machine the
  servers share the cores, the projected scaling: requests per server-CPU-second × one core per
  server;
* kernel: 1 server, then 3, each on a fresh database: ``--processes`` (300) one-step agent
  processes (model ``mock``: the mock answers, the process is done) spawned over HTTP, round-robin
  over the servers, 8 at a time; processes/s until all have ended, each server's CPU seconds and
  the same projection. Only processes spawned after the servers started are run, each by the
  server it was spawned on: processes left unfinished at a start would be stepped by every server
  until kernel work is leased per node (docs/cluster.md);
* takeover: 2 servers; each round starts the second one, opens a stream through it that stays
  open (model ``slow``, an upstream that sends one chunk and then nothing), SIGKILLs it at a random
  point of its renewal cycle, and times, from the kill, until the first server's /admin/cluster
  shows it not live and until the stream's ledger row is marked ``interrupted``. p50 and max over
  rounds, against the target lease + 5 s. Kernel process takeover is timed too once it exists
  (``process_takeover_s``); until then it prints "not built".

Figures only, no pass/fail; the machine is shared, so compare figures from the same run.
Everything it starts is stopped on exit, Ctrl-C or SIGTERM; logs go to bench/.work/cluster/.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psutil
import psycopg

import gateway
from gateway import Load, Processes, Target, free_port, http_ok, shared_bench_dir, wait_until
from processes import signals_raise, stop_process_group

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work" / "cluster"
HOST = "127.0.0.1"
LIVE_STATES = ("running", "waiting_tool", "ready", "waiting_approval", "sleeping", "suspended")


class Children(Processes):
    """gateway.py's process list, where a server can also be stopped alone (a round's victim)."""

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        for entry in list(self._running):
            if entry[1] is proc:
                stop_process_group(proc)
                entry[2].close()
                self._running.remove(entry)


def start_mock(procs: Processes, shared: Path, name: str, delay_ms: int) -> tuple[str, int]:
    """The shared mock upstream on a free port: its base URL and pid."""
    port = free_port()
    argv = [sys.executable, str(shared / "mock_upstream.py"), "--host", HOST, "--port", str(port)]
    proc = procs.start(name, [*argv, "--delay-ms", str(delay_ms)])
    base = f"http://{HOST}:{port}"
    wait_until(name, proc, lambda: http_ok(f"{base}/v1/models"), 30, procs, name)
    return base, proc.pid


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


def _example() -> ModuleType:
    """examples/cluster/run.py, for its throwaway PostgreSQL."""
    spec = importlib.util.spec_from_file_location(
        "cluster_example_run", REPO / "examples" / "cluster" / "run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# servers


@dataclass
class Server:
    """One `aigrid serve` of the bench."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass
class Rig:
    """What every phase shares: the processes, PostgreSQL, the mocks and the admin key."""

    procs: Children
    pg: Any  # examples/cluster/run.py's Postgres
    fast: str  # base URL of the fast mock
    slow: str  # base URL of the mock that does not answer within a round
    admin_key: str = field(default_factory=lambda: "sk-admin-" + secrets.token_hex(16))
    databases: int = 0

    def new_database(self) -> str:
        self.databases += 1
        name = f"bench{self.databases}"
        with psycopg.connect(
            f"host={HOST} port={self.pg.port} user=aigrid dbname=postgres", autocommit=True
        ) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://aigrid@{HOST}:{self.pg.port}/{name}"

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}


def server_config(rig: Rig, database_url: str, node: str, lease_s: float | None) -> str:
    models = ""
    for name, base in (("mock", rig.fast), ("slow", rig.slow)):
        models += f"""
[[models]]
name = "{name}"
[[models.deployments]]
backend = "openai"
base_url = "{base}/v1"
upstream_model = "mock"
input_price_per_mtok = 0.8
output_price_per_mtok = 2.0
"""
    cluster = f'[cluster]\nnode = "{node}"\n'
    if lease_s is not None:
        cluster += f"lease_s = {lease_s:g}\nrenew_s = {lease_s / 3:g}\n"
    return f'database_url = "{database_url}"\n{models}\n{cluster}'


def start_server(rig: Rig, database_url: str, node: str, lease_s: float | None) -> Server:
    """Start one server and wait until its /healthz answers 200."""
    data_dir = WORK / "data" / f"{node}-{time.monotonic_ns()}"
    data_dir.mkdir(parents=True)
    config = data_dir / "aigrid.toml"
    config.write_text(server_config(rig, database_url, node, lease_s), encoding="utf-8")
    port = free_port()
    argv = [sys.executable, "-m", "aigrid", "serve", "--config", str(config), "--host", HOST]
    argv += ["--port", str(port), "--data-dir", str(data_dir)]
    proc = rig.procs.start(node, argv, {**os.environ, "AIGRID_ADMIN_KEY": rig.admin_key})
    server = Server(node, port, proc)
    deadline = time.monotonic() + 120
    while not _ok(server.url + "/healthz"):
        if proc.poll() is not None:
            raise RuntimeError(f"{node} exited with {proc.returncode}:\n{rig.procs.log_tail(node)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node} did not start:\n{rig.procs.log_tail(node)}")
        time.sleep(0.1)
    return server


def start_servers(rig: Rig, database_url: str, names: list[str], lease_s: float | None) -> list[Server]:
    """The first server alone (it creates the schema: concurrent first starts race), then the rest at once."""
    first = start_server(rig, database_url, names[0], lease_s)
    with ThreadPoolExecutor(len(names)) as pool:
        rest = list(pool.map(lambda n: start_server(rig, database_url, n, lease_s), names[1:]))
    return [first, *rest]


def stop_servers(rig: Rig, servers: list[Server]) -> None:
    for server in servers:
        rig.procs.stop(server.proc)


def _ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def tenant_key(rig: Rig, servers: list[Server], tenant: str) -> str:
    """A new tenant key made on the first server, once every server accepts it (config sync)."""
    first = servers[0].url
    r = httpx.post(f"{first}/admin/tenants", json={"name": tenant}, headers=rig.admin(), timeout=10)
    if r.status_code not in (200, 201, 409):
        raise RuntimeError(f"POST /admin/tenants answered {r.status_code}: {r.text[:300]}")
    r = httpx.post(f"{first}/admin/keys", json={"tenant": tenant}, headers=rig.admin(), timeout=10)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"POST /admin/keys answered {r.status_code}: {r.text[:300]}")
    key = str(r.json()["key"])
    wait_for(
        lambda: all(_ok(s.url + "/v1/models", {"Authorization": f"Bearer {key}"}) for s in servers), 30, "key"
    )
    return key


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


# ---------------------------------------------------------------------------------------------
# gateway throughput


@dataclass
class Throughput:
    servers: int
    loads: list[Load]
    cpu_s: list[float]  # each server's CPU seconds during the measured run
    mock_cpu_s: float
    wall_s: float

    @property
    def requests(self) -> int:
        return sum(x.requests for x in self.loads)

    @property
    def rps(self) -> float:
        return sum(x.rps for x in self.loads)

    @property
    def p50_ms(self) -> float:
        # Per-server medians weighted by requests: wrk reports percentiles per run, not its samples.
        return sum(x.p50_ms * x.requests for x in self.loads) / max(1, self.requests)

    @property
    def p99_ms(self) -> float:
        return max(x.p99_ms for x in self.loads)

    @property
    def per_cpu_s(self) -> float:
        return self.requests / sum(self.cpu_s) if sum(self.cpu_s) else 0.0


def spread(connections: int, servers: int) -> list[int]:
    """Connections dealt round-robin over the servers."""
    return [connections // servers + (1 if i < connections % servers else 0) for i in range(servers)]


def wrk(target: Target, connections: int, seconds: float, stream: bool, shared: Path) -> Load:
    """gateway.py's wrk run, with a counting script of its own: several run at once here."""
    lua = WORK / f"wrk_count_{target.name}.lua"
    lua.write_text(gateway.COUNT_LUA, encoding="utf-8")
    env = {**os.environ, "AIGRID_BENCH_CHAT_LUA": str(shared / "chat.lua"), "MODEL": "mock"}
    env.update(STREAM="1" if stream else "0", KEY=target.key or "")
    secs = max(1, round(seconds))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{secs}s", "--latency", "-s", str(lua)]
    out = subprocess.run(
        [*argv, f"{target.base}/v1/chat/completions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=secs + 60,
        check=False,
    )
    result, count = gateway.RESULT_RE.search(out.stdout), gateway.COUNT_RE.search(out.stdout)
    if out.returncode != 0 or result is None or count is None:
        raise RuntimeError(
            f"wrk against {target.name} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
        )
    return Load(
        rps=float(result["rps"]),
        p50_ms=float(result["p50"]),
        p90_ms=float(result["p90"]),
        p99_ms=float(result["p99"]),
        errors=int(result["errors"]),
        non2xx=int(result["non2xx"]),
        requests=int(count["requests"]),
        duration_s=int(count["duration"]) / 1e6,
    )


def load_all(
    targets: list[Target], connections: int, seconds: float, shared: Path, stream: bool
) -> list[Load]:
    """One wrk per server, all at once, the connections spread round-robin."""
    counts = spread(connections, len(targets))
    with ThreadPoolExecutor(len(targets)) as pool:
        runs = [
            pool.submit(wrk, t, c, seconds, stream, shared) for t, c in zip(targets, counts, strict=True) if c
        ]
        return [r.result() for r in runs]


def measure_gateway(
    rig: Rig, args: argparse.Namespace, shared: Path, mock_pid: int, count: int
) -> Throughput:
    """``count`` servers on a fresh database, loaded by wrk; CPU seconds read around the measured run."""
    names = [f"gw-{i}" for i in range(1, count + 1)]
    servers = start_servers(rig, rig.new_database(), names, None)
    try:
        key = tenant_key(rig, servers, "bench")
        targets = [Target(s.name, s.url, key) for s in servers]
        if args.warmup > 0:
            load_all(targets, args.connections, args.warmup, shared, args.stream)
        before = [cpu_seconds(s.proc.pid) for s in servers]
        mock_before = cpu_seconds(mock_pid)
        started = time.monotonic()
        loads = load_all(targets, args.connections, args.seconds, shared, args.stream)
        wall = time.monotonic() - started
        cpu = [cpu_seconds(s.proc.pid) - b for s, b in zip(servers, before, strict=True)]
        result = Throughput(count, loads, cpu, cpu_seconds(mock_pid) - mock_before, wall)
        print(
            f"  {count} server(s): {result.rps:,.0f} req/s, CPU s {', '.join(f'{c:.1f}' for c in cpu)}",
            file=sys.stderr,
        )
        return result
    finally:
        stop_servers(rig, servers)


def report_gateway(one: Throughput, three: Throughput, args: argparse.Namespace) -> list[str]:
    cores = os.cpu_count() or 1
    kind = "streaming" if args.stream else "non-streaming"
    lines = [
        "",
        f"## gateway: {args.connections} connections ({kind}) spread round-robin, {args.seconds:g} s"
        f" (+{args.warmup:g} s warm-up), fast mock; {cores} cpus, load average at start {args.load_at_start}",
        "",
        f"{'':34}{'1 server':>16}{'3 servers':>22}",
    ]

    def row(label: str, a: str, b: str) -> None:
        lines.append(f"{label:34}{a:>16}{b:>22}")

    def each(values: list[float], digits: int = 1) -> str:
        return " / ".join(f"{v:,.{digits}f}" for v in values)

    row("req/s", f"{one.rps:,.0f}", f"{three.rps:,.0f}")
    row("req/s per server", each([x.rps for x in one.loads], 0), each([x.rps for x in three.loads], 0))
    row("p50 ms (request-weighted)", f"{one.p50_ms:.2f}", f"{three.p50_ms:.2f}")
    row("p99 ms (worst server)", f"{one.p99_ms:.2f}", f"{three.p99_ms:.2f}")
    row(
        "errors + non-2xx",
        str(sum(x.errors + x.non2xx for x in one.loads)),
        str(sum(x.errors + x.non2xx for x in three.loads)),
    )
    row("server CPU s (each)", each(one.cpu_s), each(three.cpu_s))
    row("server CPU s (all)", f"{sum(one.cpu_s):.1f}", f"{sum(three.cpu_s):.1f}")
    row("mock upstream CPU s", f"{one.mock_cpu_s:.1f}", f"{three.mock_cpu_s:.1f}")
    row(
        "cores the servers kept busy",
        f"{sum(one.cpu_s) / one.wall_s:.2f}",
        f"{sum(three.cpu_s) / three.wall_s:.2f}",
    )
    row("requests per server-CPU-second", f"{one.per_cpu_s:,.0f}", f"{three.per_cpu_s:,.0f}")
    # A server is one event loop: about one core at most. With a core of its own each, N servers
    # would serve N × what one server does per CPU-second (if the database and upstream keep up).
    p1, p3 = one.per_cpu_s, 3 * three.per_cpu_s
    row("projected req/s, a core per server", f"{p1:,.0f}", f"{p3:,.0f}")
    measured = three.rps / one.rps if one.rps else 0.0
    efficiency = three.per_cpu_s / one.per_cpu_s if one.per_cpu_s else 0.0
    lines += [
        "",
        f"measured scaling 3 ÷ 1 server(s): {measured:.2f}× on {cores} shared cores;"
        f" projected with a core per server: {p3 / p1 if p1 else 0:.2f}×"
        f" (per-CPU-second efficiency of 3 ÷ 1: {efficiency:.2f})",
    ]
    return lines


# ---------------------------------------------------------------------------------------------
# kernel workload


@dataclass
class KernelRun:
    servers: int
    processes: int
    done: int
    wall_s: float
    cpu_s: list[float]

    @property
    def per_s(self) -> float:
        return self.done / self.wall_s if self.wall_s else 0.0

    @property
    def per_cpu_s(self) -> float:
        return self.done / sum(self.cpu_s) if sum(self.cpu_s) else 0.0


def finished(dsn: str) -> tuple[int, int]:
    """Processes that ended (done, failed or killed), and of those, done."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE state IN ('done', 'failed', 'killed')),"
            " count(*) FILTER (WHERE state = 'done') FROM processes"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def measure_kernel(rig: Rig, args: argparse.Namespace, count: int) -> KernelRun:
    """``args.processes`` one-step agent processes spawned over HTTP, round-robin over ``count``
    servers, 8 spawns at a time: the time until all have ended and the servers' CPU seconds."""
    database_url = rig.new_database()
    dsn = f"host={HOST} port={rig.pg.port} user=aigrid dbname={database_url.rsplit('/', 1)[1]}"
    servers = start_servers(rig, database_url, [f"k-{i}" for i in range(1, count + 1)], None)
    try:
        key = tenant_key(rig, servers, "agents")
        auth = {"Authorization": f"Bearer {key}"}
        spec = {"name": "worker", "instructions": "Answer.", "model": "mock", "tools": [], "memory": False}
        made = httpx.post(servers[0].url + "/v1/agents", json=spec, headers=auth, timeout=10)
        if made.status_code != 201:
            raise RuntimeError(f"POST /v1/agents answered {made.status_code}: {made.text[:300]}")
        clients = [httpx.Client(base_url=s.url, headers=auth, timeout=30) for s in servers]

        def spawn(i: int) -> None:
            r = clients[i % count].post("/v1/processes", json={"agent": "worker", "input": f"job {i}"})
            if r.status_code not in (200, 201):
                raise RuntimeError(f"POST /v1/processes answered {r.status_code}: {r.text[:300]}")

        before = [cpu_seconds(s.proc.pid) for s in servers]
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(spawn, range(args.processes)))
        finally:
            for client in clients:
                client.close()
        wait_for(lambda: finished(dsn)[0] >= args.processes, 300, "every process to end")
        wall = time.monotonic() - started
        cpu = [cpu_seconds(s.proc.pid) - b for s, b in zip(servers, before, strict=True)]
        run = KernelRun(count, args.processes, finished(dsn)[1], wall, cpu)
        print(f"  kernel, {count} server(s): {run.per_s:,.1f} processes/s", file=sys.stderr)
        return run
    finally:
        stop_servers(rig, servers)


def report_kernel(one: KernelRun, three: KernelRun) -> list[str]:
    lines = [
        "",
        f"## kernel: {one.processes} one-step agent processes (model mock, fast mock), spawned over"
        " HTTP round-robin, 8 at a time",
        "",
        f"{'':34}{'1 server':>16}{'3 servers':>22}",
    ]

    def row(label: str, a: str, b: str) -> None:
        lines.append(f"{label:34}{a:>16}{b:>22}")

    row("processes done", f"{one.done}/{one.processes}", f"{three.done}/{three.processes}")
    row("wall s", f"{one.wall_s:.1f}", f"{three.wall_s:.1f}")
    row("processes/s", f"{one.per_s:,.1f}", f"{three.per_s:,.1f}")
    row(
        "server CPU s (each)",
        " / ".join(f"{c:.1f}" for c in one.cpu_s),
        " / ".join(f"{c:.1f}" for c in three.cpu_s),
    )
    row("processes per server-CPU-second", f"{one.per_cpu_s:,.1f}", f"{three.per_cpu_s:,.1f}")
    p1, p3 = one.per_cpu_s, 3 * three.per_cpu_s
    row("projected processes/s, a core each", f"{p1:,.1f}", f"{p3:,.1f}")
    lines += [
        "",
        f"measured scaling 3 ÷ 1: {three.per_s / one.per_s if one.per_s else 0:.2f}×;"
        f" projected with a core per server: {p3 / p1 if p1 else 0:.2f}×",
    ]
    return lines


# ---------------------------------------------------------------------------------------------
# takeover


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
        wait_for(lambda: _ok(victim.url + "/v1/models", auth), 30, "the key on the victim")
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


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each measured load (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured load before each (2; 0 = none)")
    p.add_argument(
        "--connections", type=int, default=32, help="wrk connections in all, spread over servers (32)"
    )
    p.add_argument("--stream", action="store_true", help="load with streamed answers")
    p.add_argument("--rounds", type=int, default=3, help="takeover rounds (3)")
    p.add_argument("--lease-s", type=float, help="[cluster] lease_s for the takeover (default: aigrid's, 15)")
    p.add_argument("--skip-gateway", action="store_true")
    p.add_argument("--skip-kernel", action="store_true")
    p.add_argument("--skip-takeover", action="store_true")
    p.add_argument("--processes", type=int, default=300, help="agent processes of the kernel workload (300)")
    args = p.parse_args(argv)
    if args.seconds < 1 or args.connections < 3 or args.rounds < 1:
        p.error("--seconds must be at least 1, --connections at least 3, --rounds at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shared = shared_bench_dir()
    for needed in ("mock_upstream.py", "chat.lua"):
        if not (shared / needed).exists():
            print(f"missing {shared / needed}; set AIGRID_SHARED to the shared folder", file=sys.stderr)
            return 2
    if shutil.which("wrk") is None:
        print("wrk not found on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    example = _example()
    if example.postgres_bin_dir() is None:
        print("PostgreSQL's server binaries are not installed (apt-get install postgresql)", file=sys.stderr)
        return 2
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    procs = Children(WORK / "logs")
    pg = example.Postgres()
    args.load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before: {args.load_at_start}; logs in {WORK / 'logs'}", file=sys.stderr)
    holding: HoldingUpstream | None = None
    lines = [f"# aigrid cluster bench ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"]
    try:
        with signals_raise():
            pg.start()
            fast, mock_pid = start_mock(procs, shared, "mock", 0)
            holding = HoldingUpstream()
            rig = Rig(procs, pg, fast, holding.base)
            if not args.skip_gateway:
                one = measure_gateway(rig, args, shared, mock_pid, 1)
                three = measure_gateway(rig, args, shared, mock_pid, 3)
                lines += report_gateway(one, three, args)
            if not args.skip_kernel:
                lines += report_kernel(measure_kernel(rig, args, 1), measure_kernel(rig, args, 3))
            if not args.skip_takeover:
                rounds, lease_s, renew_s = takeover(rig, args)
                lines += report_takeover(rounds, lease_s, renew_s)
            print("\n".join(lines))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (RuntimeError, httpx.HTTPError, subprocess.SubprocessError, OSError, psycopg.Error) as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if holding is not None:
            holding.stop()
        pg.stop()
        shutil.rmtree(WORK / "data", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
