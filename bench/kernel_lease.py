"""What owning processes adds to a kernel step: the same steps with and without the owner's check.

    .venv/bin/python bench/kernel_lease.py                     # SQLite
    .venv/bin/python bench/kernel_lease.py --postgres          # a throwaway PostgreSQL, fsync on
    .venv/bin/python bench/kernel_lease.py --src /old/src      # the code of an older checkout

Processes of a no-op agent are stepped by the Runner directly (no grid, no HTTP: a model stand-in
answers at once with a call of a no-op tool, then the answer), so what is timed is the kernel's
own cost per step: reading the process, journaling the step and moving its state. Fresh processes
are run to their end with the owner's check (node and epoch in every UPDATE, the node's lease
read in the same statement) and without it, alternating process by process so that the machine's
load falls on both sides alike; the median and p90 per step (model and tool steps counted) of each
side are reported, and the median of the journal write alone. With ``--src`` pointing at an
older checkout only the "without" side runs, on that code. It also times the poll a server runs
every renew_s: claiming orphans among the finished processes, and listing its own runnable ones;
``--table-rows N`` first adds N finished processes, as a server that has run for months would
have, beside 100 unfinished ones of a dead server (the orphans the first poll claims) and 100 of
this one waiting for a person.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _paths(src: str | None) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, src or str(ROOT / "src"))


async def _chat_turns(steps: int) -> Any:
    from aigrid.store.processes import StepUsage

    class Model:
        def context_window(self, model: str) -> int | None:
            return None

        async def chat(self, process: Any, body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
            turns = sum(1 for m in body["messages"] if m.get("role") == "assistant")
            if turns + 1 < steps:
                function = {"name": "bench__noop", "arguments": "{}"}
                call = {"id": f"t{turns}", "type": "function", "function": function}
                return {"role": "assistant", "content": None, "tool_calls": [call]}, StepUsage(10, 2, 1)
            return {"role": "assistant", "content": "done"}, StepUsage(10, 2, 1)

    return Model()


def _fill(engine: Any, tenant: int, stored: Any, owner: Any, dead: Any, rows: int) -> None:
    """``rows`` finished processes, 100 orphans of ``dead`` and 100 of ``owner``'s waiting for a person."""
    from sqlalchemy import insert

    from aigrid.store.schema import ProcessRow

    def row(i: int, state: str, node: Any) -> dict[str, Any]:
        return {
            "pid": f"p-fill{i:012d}",
            "tenant_id": tenant,
            "agent": stored.spec.name,
            "agent_version": stored.version,
            "input": "filler",
            "state": state,
            "priority": "interactive",
            "steps": 4,
            "created_at_us": i,
            "updated_at_us": i,
            "owner_node_id": None if node is None else node.node_id,
            "owner_epoch": None if node is None else node.epoch,
        }

    kinds = [("done", None)] * rows + [("running", dead)] * 100 + [("waiting_approval", owner)] * 100
    with engine.begin() as conn:
        for start in range(0, len(kinds), 5000):
            chunk = [
                row(start + i, state, node) for i, (state, node) in enumerate(kinds[start : start + 5000])
            ]
            conn.execute(insert(ProcessRow), chunk)


def _ms(call: Any) -> float:
    began = time.perf_counter()
    call()
    return (time.perf_counter() - began) * 1e3


async def run(url: str, processes: int, steps: int, rounds: int, table_rows: int = 0) -> dict[str, Any]:
    """Per-step microseconds with and without the owner's check, and the poll's milliseconds."""
    from aigrid.kernel.runner import Runner
    from aigrid.kernel.tools import CallContext, Tool, ToolRegistry
    from aigrid.spec import AgentSpec
    from aigrid.store.accounts import AccountStore
    from aigrid.store.agents import AgentStore
    from aigrid.store.cluster import ClusterStore
    from aigrid.store.db import make_engine, migrate
    from aigrid.store.processes import ProcessStore

    engine = make_engine(url)
    migrate(engine)
    tenant = AccountStore(engine).ensure_tenant("bench")
    agents = AgentStore(engine)
    spec = AgentSpec(name="w", instructions="Work.", model="mock", tools=("bench.noop",), max_steps=1000)
    stored, _ = agents.save(tenant, spec)
    store = ProcessStore(engine)

    async def noop(_arguments: dict[str, Any], _context: CallContext) -> str:
        return "ok"

    tools = ToolRegistry()
    tools.register(Tool("bench.noop", "Does nothing.", noop))
    runner = Runner(await _chat_turns(steps), store, agents, tools)
    owner = ClusterStore(engine).register("bench", 3600, None, {})
    owned = "owner" in inspect.signature(Runner.step).parameters

    async def one(checked: bool) -> float:
        """One fresh process run to its end: microseconds per step, model and tool steps counted."""
        extra = {"owner": owner} if checked and owned else {}
        pid = store.create(tenant, stored, "go", **extra).pid
        began = time.perf_counter()
        record = await runner.run(pid, **extra)
        took = time.perf_counter() - began
        assert record.state == "done" and record.steps == 2 * steps + 2 * (steps - 1), record
        return took / (2 * steps - 1) * 1e6

    def append(checked: bool, pid: str) -> float:
        """One journal write of a step, the statement the owner's check is added to."""
        extra = {"owner": owner} if checked else {}
        began = time.perf_counter()
        store.append(pid, "note", {"n": 1}, **extra)
        return (time.perf_counter() - began) * 1e6

    for _ in range(20):  # warm-up: caches, compiled statements, the pool
        await one(False)
    # Alternating process by process, so that the machine's load falls on both sides alike.
    sides: dict[bool, list[float]] = {False: [], True: []}
    for i in range(processes):
        for checked in (i % 2 == 0, i % 2 != 0):
            if checked and not owned:
                continue
            sides[checked].append(await one(checked))
    figures: dict[str, Any] = {
        "database": engine.dialect.name,
        "code_has_owners": owned,
        "processes_per_side": processes,
        "model_steps_per_process": steps,
    }
    for checked, values in sides.items():
        if values:
            name = "with" if checked else "without"
            values.sort()
            figures[f"us_per_step_{name}_owner_check_p50"] = round(statistics.median(values), 1)
            figures[f"us_per_step_{name}_owner_check_p25"] = round(values[len(values) // 4], 1)
            figures[f"us_per_step_{name}_owner_check_p90"] = round(values[int(len(values) * 0.9)], 1)
            figures[f"us_per_step_{name}_owner_check_mean"] = round(statistics.fmean(values), 1)
    if owned:
        pid = store.create(tenant, stored, "notes", owner=owner).pid
        writes: dict[bool, list[float]] = {False: [], True: []}
        for i in range(rounds * 200):
            writes[i % 2 == 0].append(append(i % 2 == 0, pid))
        figures["us_per_journal_write_without_check_p50"] = round(statistics.median(writes[False]), 1)
        figures["us_per_journal_write_with_check_p50"] = round(statistics.median(writes[True]), 1)
    if owned:
        from aigrid.store.process_claims import ProcessClaims

        claims = ProcessClaims(engine)
        dead = ClusterStore(engine).register("dead", 0.001, None, {})
        _fill(engine, tenant, stored, owner, dead, table_rows)
        if engine.dialect.name == "postgresql":  # the planner's statistics, as autovacuum keeps them
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        await asyncio.sleep(0.01)  # the dead server's lease has ended: its processes are orphans
        figures["claim_poll_with_100_orphans_ms"] = round(_ms(lambda: claims.claim(owner)), 2)
        claim = [_ms(lambda: claims.claim(owner)) for _ in range(5)]
        figures["claim_poll_ms"] = round(statistics.median(claim), 2)
        listed = [
            _ms(lambda: claims.owned(owner, ("ready", "running", "waiting_approval"))) for _ in range(5)
        ]
        figures["owned_poll_ms"] = round(statistics.median(listed), 2)
        figures["processes_in_table"] = 2 * processes + 22 + table_rows + 200
    engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL, not SQLite")
    parser.add_argument("--src", help="the aigrid sources to time (default: this checkout's)")
    parser.add_argument("--processes", type=int, default=400, help="processes per side")
    parser.add_argument("--steps", type=int, default=3, help="model steps per process")
    parser.add_argument("--rounds", type=int, default=5, help="hundreds of journal writes per side")
    parser.add_argument(
        "--table-rows", type=int, default=0, help="finished processes to add before the polls"
    )
    args = parser.parse_args()
    _paths(args.src)
    with tempfile.TemporaryDirectory() as tmp:
        if args.postgres:
            from tests.postgres import Postgres

            server = Postgres(durable=True)
            try:
                url = server.new_database()
                figures = asyncio.run(run(url, args.processes, args.steps, args.rounds, args.table_rows))
            finally:
                server.stop()
        else:
            sqlite = f"sqlite:///{tmp}/lease.db"
            figures = asyncio.run(run(sqlite, args.processes, args.steps, args.rounds, args.table_rows))
    for key, value in figures.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
