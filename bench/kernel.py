"""The agent kernel under load: overhead per step, upstream use, fairness between tenants, latency.

    .venv/bin/python bench/kernel.py              # every scenario, fair scheduler beside FIFO
    .venv/bin/python bench/kernel.py --quick      # smaller figures, for a smoke run
    .venv/bin/python bench/kernel.py --postgres --only overhead   # as a cluster node on PostgreSQL
    .venv/bin/python bench/kernel.py --postgres --pin --only overhead   # the database on other CPUs

With ``--postgres`` each scenario gets a fresh database on a throwaway PostgreSQL server that syncs
its commits to disk (fsync on, as in production; tests/postgres.py), and the kernel runs as a
cluster node would: a member of the cluster with a lease, every step's writes fenced by its owner.

Everything runs in one process, as the server runs it: the kernel, its workers and scheduler, the
grid (admission, routing, the ledger) and a SQLite database, with one deployment on the shared mock
upstream (`../shared/bench/mock_upstream.py`) capped at 64 concurrent requests. The mock never asks
for a tool, so a process of N steps is scripted: the first N-1 answers the grid brings back are
turned into a call of a no-op tool (`ToolCallScript`), and the last is the answer. Every model call
still goes through the grid to the mock and is metered.

Each scenario runs the fair scheduler and, beside it in the same run, a plain FIFO queue.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aigrid.config import DeploymentConfig, ModelConfig, ServerConfig
from aigrid.grid.limits import Admission
from aigrid.grid.meter import Metrics
from aigrid.grid.plants import build_routes
from aigrid.grid.router import Deployment, Router
from aigrid.grid.service import Grid
from aigrid.kernel.kernel import Kernel
from aigrid.kernel.model import GridModelClient, TenantNames
from aigrid.kernel.runner import Runner
from aigrid.kernel.scheduler import FairScheduler, Runnable, Scheduler
from aigrid.kernel.tools import CallContext, Tool, ToolRegistry
from aigrid.spec import AgentSpec
from aigrid.store.accounts import AccountStore, Principal
from aigrid.store.agents import AgentStore
from aigrid.store.cluster import ClusterStore
from aigrid.store.db import WalCheckpointer, make_engine, migrate
from aigrid.store.ledger import Ledger
from aigrid.store.processes import ProcessRecord, ProcessStore, StepUsage
from aigrid.store.schema import ProcessRow
from processes import signals_raise, stop_process_group

CAP = 64
SCENARIOS = ("overhead", "capacity", "fairness", "latency")
# Where each rig's fresh database is: SQLite in the rig's folder, or a new PostgreSQL database.
DatabaseFor = Callable[[Path], str]


def _sqlite_in(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'kernel.db'}"


DATABASE_FOR: list[DatabaseFor] = [_sqlite_in]  # set by databases()
# The CPU seconds the database server has used so far (SQLite runs in this process: none apart).
DATABASE_CPU: list[Callable[[], float]] = [lambda: 0.0]
# With --pin: the CPUs the kernel runs on, and those the database and the mock upstream run on.
PINNED: list[tuple[set[int], set[int]] | None] = [None]


def pin_apart(pid: int) -> None:
    """Move a helper process (and the threads it has) to the helpers' CPUs, with --pin."""
    if PINNED[0] is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), PINNED[0][1])


ROOT = Path(__file__).resolve().parents[1]
NOOP = "bench.noop"


def shared_bench() -> Path:
    """The shared bench folder beside the checkout (or $AIGRID_SHARED/bench)."""
    base = Path(os.environ.get("AIGRID_SHARED", ROOT.parent / "shared"))
    return base / "bench"


@contextmanager
def mock_upstream(delay_ms: int) -> Iterator[str]:
    """The shared mock upstream on a free port, answering after ``delay_ms``."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            str(shared_bench() / "mock_upstream.py"),
            "--port",
            str(port),
            "--delay-ms",
            str(delay_ms),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pin_apart(proc.pid)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process_group(proc)


class FifoScheduler:
    """The baseline: one queue, first come first served, no tenants, no priorities."""

    def __init__(self) -> None:
        self._queue: collections.OrderedDict[str, Runnable] = collections.OrderedDict()

    def add(self, runnable: Runnable) -> None:
        self._queue[runnable.pid] = runnable

    def remove(self, pid: str) -> None:
        self._queue.pop(pid, None)

    def next(self, now: float) -> Runnable | None:
        return self._queue.popitem(last=False)[1] if self._queue else None

    def done(self, runnable: Runnable, tokens: int, now: float) -> None:
        return


class ToolCallScript:
    """The bench's model: the grid's real answer, turned into a no-op tool call until the last step."""

    def __init__(self, inner: GridModelClient, steps: dict[str, int]) -> None:
        self._inner = inner
        self._steps = steps  # agent -> model calls per process (one for any other agent)
        self.calls = 0

    def context_window(self, model: str) -> int | None:
        return self._inner.context_window(model)

    async def chat(self, process: ProcessRecord, body: dict[str, Any]) -> tuple[dict[str, Any], StepUsage]:
        message, usage = await self._inner.chat(process, body)
        self.calls += 1
        turns = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        if turns + 1 < self._steps.get(process.agent, 1):
            function = {"name": "bench__noop", "arguments": "{}"}
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": f"t{turns}", "type": "function", "function": function}],
            }
        return message, usage


async def _noop(_arguments: dict[str, Any], _context: CallContext) -> str:
    return "ok"


@dataclass
class Rig:
    """A kernel over the grid and a fresh database, as the server builds them."""

    kernel: Kernel
    model: ToolCallScript
    processes: ProcessStore
    engine: Any
    deployment: Deployment
    ledger: Ledger
    checkpointer: WalCheckpointer
    tenants: dict[str, int]

    async def close(self) -> None:
        await self.kernel.close()
        await self.deployment.backend.close()
        await self.ledger.aclose()
        await self.checkpointer.aclose()
        self.engine.dispose()


async def make_rig(
    workdir: Path,
    upstream: str,
    scheduler: Scheduler,
    workers: int,
    agents: dict[str, tuple[int, str]],
    tenants: list[str],
) -> Rig:
    """``agents``: name -> (model calls per process, priority)."""
    engine = make_engine(DATABASE_FOR[0](workdir))
    migrate(engine)
    # On a database server the kernel is a cluster node: it owns what it spawns, under a lease.
    node = None if engine.dialect.name == "sqlite" else ClusterStore(engine).register("bench", 3600, None, {})
    accounts = AccountStore(engine)
    ids = {t: accounts.ensure_tenant(t) for t in tenants}
    store = AgentStore(engine)
    for tenant_id in ids.values():
        for name, (_, priority) in agents.items():
            spec = AgentSpec(
                name=name,
                instructions="Work.",
                model="mock",
                tools=(NOOP,),
                priority=priority,
                memory=False,
                max_steps=1000,
            )
            store.save(tenant_id, spec)
    deployment_config = DeploymentConfig(
        backend="openai", base_url=upstream, upstream_model="mock", max_connections=CAP
    )
    config = ServerConfig(models=[ModelConfig(name="mock", deployments=[deployment_config])])
    router = Router(build_routes(config.models, config))
    ledger = Ledger(engine, workdir / "journal")
    ledger.start()
    checkpointer = WalCheckpointer(engine)
    checkpointer.start()
    grid = Grid(router, Admission(), ledger, Metrics(lambda: []))
    (deployment,) = router.deployments()
    await deployment.backend.start()
    tools = ToolRegistry()
    tools.register(Tool(NOOP, "Does nothing.", _noop))
    processes = ProcessStore(engine)
    model = ToolCallScript(
        GridModelClient(grid, TenantNames(accounts.tenant_names)), {a: s for a, (s, _) in agents.items()}
    )
    runner = Runner(model, processes, store, tools)
    kernel = Kernel(runner, processes, store, scheduler, workers=workers, owner=lambda: node)
    await kernel.start()
    return Rig(kernel, model, processes, engine, deployment, ledger, checkpointer, ids)


def finished_count(engine: Any) -> int:
    with Session(engine) as session:
        return int(
            session.scalar(select(func.count()).where(ProcessRow.state.in_(["done", "failed", "killed"])))
            or 0
        )


async def sample_busy(deployment: Deployment, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(deployment.in_flight)
        await asyncio.sleep(0.005)


async def wait_all(engine: Any, total: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while finished_count(engine) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {finished_count(engine)} of {total} processes finished in {timeout_s:g} s"
            )
        await asyncio.sleep(0.05)


def new_scheduler(kind: str, tenant_cap: int = CAP) -> Scheduler:
    return FairScheduler(tenant_cap=tenant_cap) if kind == "fair" else FifoScheduler()


def _server_processes(data_dir: Path) -> Iterator[tuple[bool, int, list[str]]]:
    """A local PostgreSQL server's processes, from /proc (Linux): whether each is the postmaster,
    its pid, and the fields of its stat after the command's name."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        pid = int(entry.name)
        if pid == postmaster or int(fields[1]) == postmaster:
            yield pid == postmaster, pid, fields


def server_cpu_s(data_dir: Path) -> float:
    """CPU seconds a local PostgreSQL server has used: its postmaster (with the backends it reaped)
    and every process it runs now."""
    ticks = 0
    for is_postmaster, _, fields in _server_processes(data_dir):
        # utime and stime, and for the postmaster its reaped children's too
        ticks += sum(int(f) for f in fields[11 : 15 if is_postmaster else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


async def capacity(upstream: str, kind: str, processes: int, steps: int) -> dict[str, float]:
    """``processes`` concurrent processes of ``steps`` model calls: wall time, CPU and upstream use."""
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / ".work") as tmp:
        rig = await make_rig(
            Path(tmp), upstream, new_scheduler(kind), CAP, {"worker": (steps, "interactive")}, ["t"]
        )
        samples: list[int] = []
        stop = asyncio.Event()
        try:
            started, cpu, db_cpu = time.perf_counter(), time.process_time(), DATABASE_CPU[0]()
            sampler = asyncio.create_task(sample_busy(rig.deployment, samples, stop))
            for i in range(processes):
                await rig.kernel.spawn(rig.tenants["t"], "worker", f"job {i}")
            await wait_all(rig.engine, processes, 600)
            wall = time.perf_counter() - started
            cpu, db_cpu = time.process_time() - cpu, DATABASE_CPU[0]() - db_cpu
            stop.set()
            await sampler
            with Session(rig.engine) as session:
                done = session.scalar(select(func.count()).where(ProcessRow.state == "done"))
        finally:
            await rig.close()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "db_cpu_s": db_cpu,
        "model_calls": rig.model.calls,
        "done": float(done or 0),
        "busy": statistics.fmean(samples) / CAP if samples else 0.0,
    }


async def direct_grid(upstream: str, calls: int) -> tuple[float, float]:
    """The same model calls straight through the grid, ``CAP`` at a time: the floor the kernel adds
    to, as wall and CPU seconds."""
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / ".work") as tmp:
        rig = await make_rig(Path(tmp), upstream, FairScheduler(), 1, {"worker": (1, "interactive")}, ["t"])
        grid_client = rig.model._inner
        principal = Principal(rig.tenants["t"], "t", None)
        body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(calls):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                await grid_client._grid.request(principal, "chat", body)

        try:
            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(worker() for _ in range(CAP)))
            return time.perf_counter() - started, time.process_time() - cpu
        finally:
            await rig.close()


async def fairness(upstream: str, kind: str, window_s: float) -> dict[str, float]:
    """Tenants a (10 processes) and b (500), equal weights, 16 workers: token shares over a window."""
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / ".work") as tmp:
        # 16 steps at once: the small tenant's 10 processes can use its half, so the split shows.
        rig = await make_rig(
            Path(tmp), upstream, new_scheduler(kind), 16, {"long": (10_000, "interactive")}, ["a", "b"]
        )
        try:
            for i in range(10):
                await rig.kernel.spawn(rig.tenants["a"], "long", f"a {i}")
            for i in range(500):
                await rig.kernel.spawn(rig.tenants["b"], "long", f"b {i}")
            await asyncio.sleep(1.0)  # settle
            before = tokens_by_tenant(rig.engine)
            await asyncio.sleep(window_s)
            after = tokens_by_tenant(rig.engine)
        finally:
            await rig.close()
    a = after.get(rig.tenants["a"], 0) - before.get(rig.tenants["a"], 0)
    b = after.get(rig.tenants["b"], 0) - before.get(rig.tenants["b"], 0)
    jain = (a + b) ** 2 / (2 * (a * a + b * b)) if a + b else 0.0
    return {"a_tokens": a, "b_tokens": b, "a_share": a / (a + b) if a + b else 0.0, "jain": jain}


def tokens_by_tenant(engine: Any) -> dict[int, int]:
    with Session(engine) as session:
        rows = session.execute(
            select(
                ProcessRow.tenant_id, func.sum(ProcessRow.prompt_tokens + ProcessRow.completion_tokens)
            ).group_by(ProcessRow.tenant_id)
        ).all()
    return {tenant: int(total or 0) for tenant, total in rows}


async def latency(upstream: str, kind: str, background: int, steps: int) -> list[float]:
    """Step latencies (ms) of one interactive process, beside ``background`` busy background ones."""
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / ".work") as tmp:
        agents = {"chat": (steps, "interactive"), "batch": (10_000, "background")}
        rig = await make_rig(Path(tmp), upstream, new_scheduler(kind), CAP, agents, ["t"])
        try:
            for i in range(background):
                await rig.kernel.spawn(rig.tenants["t"], "batch", f"batch {i}")
            if background:
                await asyncio.sleep(1.0)  # the background load is in full swing
            chat = await rig.kernel.spawn(rig.tenants["t"], "chat", "hello")
            deadline = time.monotonic() + 300
            while not rig.processes.get(chat.pid).finished:
                if time.monotonic() > deadline:
                    raise TimeoutError("the interactive process did not finish")
                await asyncio.sleep(0.02)
            journal = rig.processes.journal(chat.pid)
        finally:
            await rig.close()
    # A model step is runnable from the step before it (the process start, or the tool result)
    # until its response is journaled: the wait for a worker, the call, and the kernel's writes.
    latencies: list[float] = []
    previous = chat.created_at_us
    for step in journal:
        if step.kind == "model_response":
            latencies.append((step.created_at_us - previous) / 1000)
        if step.kind in ("model_response", "tool_result"):
            previous = step.created_at_us
    return latencies


@contextmanager
def databases(postgres: bool) -> Iterator[None]:
    """With ``postgres``, each rig's database a fresh one on a durable throwaway PostgreSQL server."""
    if not postgres:
        yield
        return
    from tests.postgres import Postgres

    server = Postgres(durable=True)
    # The backends it starts from now on inherit the postmaster's CPUs.
    for _, pid, _ in _server_processes(server.data):
        pin_apart(pid)
    DATABASE_FOR[0] = lambda _workdir: server.new_database()
    DATABASE_CPU[0] = lambda: server_cpu_s(server.data)
    try:
        yield
    finally:
        DATABASE_FOR[0], DATABASE_CPU[0] = _sqlite_in, lambda: 0.0
        server.stop()


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


async def main(args: argparse.Namespace) -> None:
    (ROOT / "bench" / ".work").mkdir(parents=True, exist_ok=True)
    n, steps = args.processes, args.steps
    where = "PostgreSQL (fsync on), as a cluster node" if args.postgres else "SQLite"
    if PINNED[0] is not None:
        where += f"; the kernel on CPU {sorted(PINNED[0][0])}, the rest on {sorted(PINNED[0][1])}"
    print(f"# aigrid kernel bench: {n} processes x {steps} model steps; upstream cap {CAP}; {where}")

    if "overhead" in args.only:
        with mock_upstream(0) as fast:
            direct, direct_cpu = await direct_grid(fast, n * steps)
            overhead_runs = {kind: await capacity(fast, kind, n, steps) for kind in ("fair", "fifo")}
        print("\n## overhead (mock --delay-ms 0)")
        per_call_cpu = direct_cpu / (n * steps)
        print(
            f"grid alone: {n * steps} calls in {direct:.2f} s = {direct / (n * steps) * 1000:.3f} ms/call, "
            f"{per_call_cpu * 1000:.3f} ms CPU/call"
        )
        for kind, run in overhead_runs.items():
            calls = run["model_calls"]
            per_step = (run["wall_s"] - direct) / calls * 1000
            done = f"{int(run['done'])}/{n} done, {calls} model steps in {run['wall_s']:.2f} s"
            print(
                f"kernel {kind:<4}: {done}; kernel overhead {per_step:.3f} ms per model step "
                f"({per_step / 2:.3f} ms per step, tool steps counted)"
            )
            # The same in CPU time, the grid's calls taken out: what a step costs the server's
            # process, whoever else (the database) shares the machine's cores.
            cpu_step = (run["cpu_s"] - per_call_cpu * calls) / calls / 2 * 1000
            database = (
                f"; the database's CPU {run['db_cpu_s'] / calls / 2 * 1000:.3f} ms" if args.postgres else ""
            )
            print(f"           CPU per step: the server's kernel {cpu_step:.3f} ms{database}")
    if set(args.only) - {"overhead"}:
        with mock_upstream(50) as slow:
            await _loaded(args, slow)


async def _loaded(args: argparse.Namespace, slow: str) -> None:
    """The scenarios on the slow upstream: capacity, fairness, interactive latency."""
    n, steps = args.processes, args.steps
    if "capacity" in args.only:
        cap_runs = {kind: await capacity(slow, kind, n, steps) for kind in ("fair", "fifo")}
        print("\n## capacity (mock --delay-ms 50)")
        ideal = n * steps * 0.050 / CAP
        for kind, run in cap_runs.items():
            print(
                f"{kind:<4}: {int(run['done'])}/{n} done in {run['wall_s']:.2f} s (ideal {ideal:.2f} s); "
                f"upstream busy {run['busy'] * 100:.1f}%"
            )
    if "fairness" in args.only:
        print(f"\n## fairness: tenant a 10 processes, tenant b 500, equal weights, {args.window:g} s window")
        for kind in ("fair", "fifo"):
            f = await fairness(slow, kind, args.window)
            print(
                f"{kind:<4}: a {int(f['a_tokens'])} tokens, b {int(f['b_tokens'])} tokens; "
                f"a's share {f['a_share'] * 100:.1f}%; Jain's index {f['jain']:.3f}"
            )
    if "latency" in args.only:
        print(f"\n## interactive latency with {args.background} background processes")
        idle = await latency(slow, "fair", 0, args.chat_steps)
        print(f"idle      : p50 {statistics.median(idle):.1f} ms, p95 {p95(idle):.1f} ms")
        for kind in ("fair", "fifo"):
            loaded = await latency(slow, kind, args.background, args.chat_steps if kind == "fair" else 5)
            print(
                f"{kind:<4} busy: p50 {statistics.median(loaded):.1f} ms, p95 {p95(loaded):.1f} ms; "
                f"p95 / idle p95 = {p95(loaded) / p95(idle):.2f}"
            )


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--window", type=float, default=5.0, help="seconds the fairness split is measured")
    parser.add_argument("--background", type=int, default=500)
    parser.add_argument("--chat-steps", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="100 processes, 2 s windows")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="(all)")
    parser.add_argument(
        "--postgres", action="store_true", help="a throwaway PostgreSQL (fsync on), the kernel a cluster node"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the kernel on the first CPU, the database and the mock upstream on the others "
        "(as if they ran on machines of their own)",
    )
    args = parser.parse_args()
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            parser.error("--pin needs at least two CPUs")
        PINNED[0] = ({cpus[0]}, set(cpus[1:]))
        os.sched_setaffinity(0, PINNED[0][0])  # before any thread starts: they all inherit it
    if args.quick:
        args.processes, args.window, args.background, args.chat_steps = 100, 2.0, 100, 10
    logging.basicConfig(level=logging.WARNING)
    with signals_raise(), databases(args.postgres):
        try:
            asyncio.run(main(args))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)


if __name__ == "__main__":
    cli()
