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
  (``process_takeover_s`` in cluster_takeover.py); until then it prints "not built".

Figures only, no pass/fail; the machine is shared, so compare figures from the same run.
Everything it starts is stopped on exit, Ctrl-C or SIGTERM; logs go to bench/.work/cluster/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

import gateway
from cluster_rig import (
    HOST,
    WORK,
    Children,
    Rig,
    cpu_seconds,
    example,
    start_mock,
    start_servers,
    stop_servers,
    tenant_key,
    wait_for,
)
from cluster_takeover import HoldingUpstream, report_takeover, takeover
from gateway import Load, Target, shared_bench_dir
from processes import signals_raise

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
    launcher = example()
    if launcher.postgres_bin_dir() is None:
        print("PostgreSQL's server binaries are not installed (apt-get install postgresql)", file=sys.stderr)
        return 2
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    procs = Children(WORK / "logs")
    pg = launcher.Postgres()
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
