"""The agent compiler on a corpus of one-sentence descriptions, with the embedded model.

    .venv/bin/python bench/compiler.py                 # every description; about 8 minutes on 2 cores
    .venv/bin/python bench/compiler.py --limit 5       # the first five, for a smoke run
    .venv/bin/python bench/compiler.py --only monitor  # descriptions containing a substring
    .venv/bin/python bench/compiler.py --json bench/.work/compiler.json   # the rows as JSON too

Everything runs in one process, as the server runs it for its default config (no config file, no
``[[models]]``: the embedded SmolLM2-135M, ``load_config(None)``): the grid (admission, routing,
the ledger) over a scratch SQLite database under ``bench/.work/``, ``GridModelClient.json_writer``
for the kernel's ``compiler_model`` and the ``Compiler`` that ``aigrid.api.app._kernel`` builds.
The tools offered are the built-ins (``SystemCalls``, on the same database) and the example
services' catalog ``src/aigrid/learn/suites/compiler_tools.json``, whose handlers raise: nothing
runs, a spec is only compiled.

Each line of ``src/aigrid/learn/suites/compiler_heldout.jsonl`` is compiled at a fixed "now",
2026-11-23T10:00:00+08:00 (a Monday morning in Shanghai), in its ``timezone`` (Asia/Shanghai if
none). A line states the tools a careful person would grant and the timed trigger (or none), or
``"error": true`` for a description that should make no agent. Per line the bench prints ok/miss
and what differed; a tool the full-text search did not offer is marked ``(not offered)``, so a
search miss reads apart from the model's choice. The summary counts valid specs, clear errors
(``CompileError``), broken outcomes (another exception, or a spec that does not validate again:
must be 0), right trigger, right tools, both, and the compile time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import orjson

from aigrid.config import load_config
from aigrid.grid.limits import Admission
from aigrid.grid.meter import Metrics
from aigrid.grid.plants import build_routes
from aigrid.grid.router import Router
from aigrid.grid.service import Grid
from aigrid.kernel.builtins import SystemCalls
from aigrid.kernel.compiler import CompileError, Compiler
from aigrid.kernel.inbox import Inbox
from aigrid.kernel.model import GridModelClient, TenantNames
from aigrid.kernel.tool_search import search_tools
from aigrid.kernel.tools import Tool, ToolRegistry
from aigrid.learn.judges import catalog_tools
from aigrid.learn.verifiers import broken_spec, same_trigger, shown_trigger, trigger_of
from aigrid.spec import MEMORY_TOOLS
from aigrid.store.accounts import AccountStore
from aigrid.store.agents import AgentStore
from aigrid.store.db import WalCheckpointer, make_engine, migrate
from aigrid.store.inbox import InboxStore
from aigrid.store.ledger import Ledger
from aigrid.store.memory import MemoryStore
from aigrid.store.processes import ProcessRecord, ProcessStore

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
LOG = WORK / "compiler-last.log"  # stderr of the run: llama.cpp's messages (a refused grammar is long)
CATALOG = ROOT / "src" / "aigrid" / "learn" / "suites" / "compiler_tools.json"
CORPUS = ROOT / "src" / "aigrid" / "learn" / "suites" / "compiler_heldout.jsonl"
NOW = datetime.fromisoformat("2026-11-23T10:00:00+08:00")  # a Monday, 10:00 in Shanghai
DEFAULT_TIMEZONE = "Asia/Shanghai"
TENANT = "bench"


class _NoSpawn:
    """The system calls' spawner: the bench compiles specs and starts no process."""

    async def spawn(
        self,
        tenant_id: int,
        agent: str,
        input_text: str,
        parent_pid: str | None = None,
        spawn_key: str | None = None,
        origin: str = "api",
        sender: str | None = None,
    ) -> ProcessRecord:
        raise RuntimeError("the compiler bench starts no process")


@dataclass
class Rig:
    """The compiler on the grid's embedded model, and the tools a tenant sees, as the server has them."""

    compiler: Compiler
    tools: list[Tool]
    tenant_id: int


@asynccontextmanager
async def make_rig(workdir: Path) -> AsyncIterator[Rig]:
    config = load_config(None)  # no config file: the embedded model alone, the server's default
    async with AsyncExitStack() as stack:
        engine = make_engine(f"sqlite:///{workdir / 'compiler.db'}")
        stack.callback(engine.dispose)
        migrate(engine)
        accounts = AccountStore(engine)
        tenant_id = accounts.ensure_tenant(TENANT)
        router = Router(build_routes(config.models, config))
        ledger = Ledger(engine, workdir / "journal", sync=config.ledger.sync)
        ledger.start()
        stack.push_async_callback(ledger.aclose)
        checkpointer = WalCheckpointer(engine)
        checkpointer.start()
        stack.push_async_callback(checkpointer.aclose)
        grid = Grid(router, Admission(), ledger, Metrics(lambda: [d.health() for d in router.deployments()]))
        for deployment in router.deployments():
            await deployment.backend.start()
            stack.push_async_callback(deployment.backend.close)
        agents, processes = AgentStore(engine), ProcessStore(engine)
        inbox = Inbox(InboxStore(engine), agents, processes)
        registry = ToolRegistry()
        registry.add_all(SystemCalls(MemoryStore(engine), inbox, processes, _NoSpawn()).tools())
        registry.add_all(catalog_tools(CATALOG))
        model = GridModelClient(grid, TenantNames(accounts.tenant_names))
        compiler = Compiler(model.json_writer(config.kernel.compiler_model), config.kernel.agent_model)
        # The tools POST /v1/agents offers the compiler: every one the tenant can see.
        yield Rig(compiler, [r.tool for r in registry.visible(tenant_id)], tenant_id)


# --- expectations --------------------------------------------------------------------------------


@dataclass
class Row:
    line: int
    description: str
    outcome: str  # spec, error (CompileError), broken
    seconds: float
    expect_error: bool
    detail: str = ""
    trigger_ok: bool = False
    tools_ok: bool = False
    offered: list[str] = field(default_factory=list)
    spec: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        if self.expect_error:
            return self.outcome == "error"
        return self.outcome == "spec" and self.trigger_ok and self.tools_ok


def offered_tools(tools: list[Tool], description: str) -> list[str]:
    """The candidates the compiler's search offers the model (memory tools are never candidates)."""
    grantable = [t for t in tools if not t.name.startswith(MEMORY_TOOLS)]
    return [f.tool.name for f in search_tools(grantable, " ".join(description.split()))]


async def measure(rig: Rig, line: int, case: dict[str, Any]) -> Row:
    description = str(case["description"])
    timezone = str(case.get("timezone") or DEFAULT_TIMEZONE)
    expect_error = bool(case.get("error"))
    row = Row(line, description, "spec", 0.0, expect_error)
    row.offered = offered_tools(rig.tools, description)
    started = time.perf_counter()
    try:
        draft = await rig.compiler.compile(rig.tenant_id, description, rig.tools, NOW, timezone, ())
    except CompileError as exc:
        row.seconds = time.perf_counter() - started
        row.outcome = "error" if exc.message.strip() else "broken"
        row.detail = exc.message
        return row
    except Exception as exc:  # anything else is a broken outcome, counted, not raised
        row.seconds = time.perf_counter() - started
        row.outcome, row.detail = "broken", f"{type(exc).__name__}: {exc}"
        return row
    row.seconds = time.perf_counter() - started
    row.spec = draft.spec.model_dump(mode="json")
    problem = broken_spec(draft, {t.name for t in rig.tools})
    if problem is not None:
        row.outcome, row.detail = "broken", problem
        return row
    if expect_error:
        row.detail = f"made agent '{draft.spec.name}' (tools: {', '.join(draft.spec.tools) or 'none'})"
        return row
    got_trigger, want_trigger = trigger_of(draft.spec), case.get("trigger")
    row.trigger_ok = same_trigger(got_trigger, want_trigger, timezone)
    got_tools, want_tools = set(draft.spec.tools), set(case.get("tools") or [])
    row.tools_ok = got_tools == want_tools
    differences = []
    if not row.trigger_ok:
        differences.append(f"trigger {shown_trigger(got_trigger)}, want {shown_trigger(want_trigger)}")
    if not row.tools_ok:
        missing = [
            name + ("" if name in row.offered else " (not offered)")
            for name in sorted(want_tools - got_tools)
        ]
        extra = sorted(got_tools - want_tools)
        parts = [f"-{name}" for name in missing] + [f"+{name}" for name in extra]
        differences.append("tools " + " ".join(parts))
    row.detail = "; ".join(differences)
    return row


def load_corpus(path: Path) -> list[tuple[int, dict[str, Any]]]:
    cases = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if text.strip():
            cases.append((number, orjson.loads(text)))
    return cases


@contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """File descriptor 2 (Python's logging and llama.cpp's own prints) into ``path`` for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("wb") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(rows: list[Row]) -> list[str]:
    agents = [r for r in rows if not r.expect_error]
    refusals = [r for r in rows if r.expect_error]
    times = [r.seconds for r in rows]
    count = len(agents)

    def of(n: int, total: int) -> str:
        return f"{n}/{total} ({100 * n / total:.0f}%)" if total else f"{n}/0"

    return [
        f"descriptions           {len(rows)} ({count} should make an agent, {len(refusals)} should not)",
        f"valid specs            {sum(r.outcome == 'spec' for r in rows)}",
        f"clear errors           {sum(r.outcome == 'error' for r in rows)}",
        f"broken                 {sum(r.outcome == 'broken' for r in rows)}  (must be 0)",
        f"agent lines with spec  {of(sum(r.outcome == 'spec' for r in agents), count)}",
        f"right trigger          {of(sum(r.outcome == 'spec' and r.trigger_ok for r in agents), count)}",
        f"right tools            {of(sum(r.outcome == 'spec' and r.tools_ok for r in agents), count)}",
        f"right both             {of(sum(r.ok for r in agents), count)}",
        f"expected errors        {of(sum(r.outcome == 'error' for r in refusals), len(refusals))} errored",
        f"compile time           mean {statistics.fmean(times):.2f} s, p95 {percentile(times, 0.95):.2f} s"
        if times
        else "compile time           -",
    ]


async def run(args: argparse.Namespace) -> list[Row]:
    cases = load_corpus(args.corpus)
    if args.only:
        cases = [(n, c) for n, c in cases if args.only.lower() in str(c.get("description", "")).lower()]
    if args.limit is not None:
        cases = cases[: args.limit]
    WORK.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=WORK) as tmp, stderr_to(LOG):
        async with make_rig(Path(tmp)) as rig:
            print(f"now {NOW.isoformat()}; {len(rig.tools)} tools offered; {len(cases)} descriptions")
            for number, case in cases:
                row = await measure(rig, number, case)
                rows.append(row)
                mark = "ok" if row.ok else "MISS" if row.outcome != "broken" else "BROKEN"
                what = row.detail if row.outcome == "spec" else f"{row.outcome}: {row.detail}"
                text = clip(row.description, 60)
                print(f"{mark:<6} {number:>3} {row.seconds:5.1f}s  {text:<60}  {what}", flush=True)
    print()
    for text in summary(rows):
        print(text)
    if LOG.stat().st_size:
        print(f"stderr of the run (logs, llama.cpp): {LOG.relative_to(ROOT)}, {LOG.stat().st_size} bytes")
    if args.json:
        args.json.write_bytes(orjson.dumps([r.__dict__ for r in rows], option=orjson.OPT_INDENT_2))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, help="compile only the first N descriptions")
    parser.add_argument("--only", help="compile only descriptions containing this text (any case)")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="a JSONL corpus (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write every row, with its spec, to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rows = asyncio.run(run(args))
    sys.exit(1 if any(r.outcome == "broken" for r in rows) else 0)


if __name__ == "__main__":
    main()
