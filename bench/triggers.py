"""Always-on agents under load: 300 agents on interval triggers for ten minutes, every firing counted.

    .venv/bin/python bench/triggers.py                 # 300 agents, every 10 s, for 10 minutes
    .venv/bin/python bench/triggers.py --minutes 1     # a short run

Everything runs in one process as the server runs it (kernel, scheduler, trigger service, grid,
ledger, a fresh SQLite database under `bench/.work/`), with one deployment on the shared mock
upstream (`--delay-ms 50`). Each agent has one interval trigger and answers in one model call.
At the end every trigger's slots (first firing, then every interval, up to the end) are compared
with the processes it started (their spawn key is `trigger:<id>:<slot>`): a slot without a process
is missed, a slot with two is doubled. The delay of a firing is from its slot to its process's start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import select
from sqlalchemy.orm import Session

from aigrid.kernel.scheduler import FairScheduler
from aigrid.kernel.triggers import TriggerService
from aigrid.spec import AgentSpec
from aigrid.store.agents import AgentStore
from aigrid.store.schema import AgentTrigger, ProcessRow
from aigrid.store.triggers import TriggerStore
from kernel import CAP, ROOT, make_rig, mock_upstream
from processes import signals_raise


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


async def run(args: argparse.Namespace) -> None:
    (ROOT / "bench" / ".work").mkdir(parents=True, exist_ok=True)
    every_us = args.every * 1_000_000
    print(f"# aigrid triggers bench: {args.agents} agents, every {args.every} s, {args.minutes:g} min")
    with mock_upstream(50) as upstream, tempfile.TemporaryDirectory(dir=ROOT / "bench" / ".work") as tmp:
        rig = await make_rig(
            Path(tmp), upstream, FairScheduler(tenant_cap=CAP), CAP, {"one": (1, "background")}, ["t"]
        )
        tenant = rig.tenants["t"]
        agents = AgentStore(rig.engine)
        triggers = TriggerService(TriggerStore(rig.engine), rig.kernel)
        try:
            for i in range(args.agents):
                spec = AgentSpec(
                    name=f"watcher-{i:03d}",
                    instructions="Check.",
                    model="mock",
                    memory=False,
                    priority="background",
                    triggers=({"kind": "interval", "every_s": args.every},),  # type: ignore[arg-type]
                )
                stored, _ = agents.save(tenant, spec)
                await triggers.agent_saved(tenant, stored)
            await triggers.start()
            await asyncio.sleep(args.minutes * 60)
            # Slots due up to a second before the service stopped must have fired.
            end_us = int(time.time() * 1_000_000) - 1_000_000
            await triggers.aclose()
            await asyncio.sleep(2)  # the last firings' processes finish
            with Session(rig.engine) as session:
                rows = session.scalars(select(AgentTrigger)).all()
                keys = session.execute(
                    select(ProcessRow.spawn_key, ProcessRow.created_at_us, ProcessRow.state).where(
                        ProcessRow.origin == "trigger"
                    )
                ).all()
        finally:
            await rig.close()
    fired = Counter(key for key, _, _ in keys)
    expected = missed = doubled = 0
    delays: list[float] = []
    by_key = {key: created for key, created, _ in keys}
    for row in rows:
        assert row.next_at_us is not None
        first = row.next_at_us - row.fired * every_us  # the grid of slots this trigger kept
        slots = [
            first + k * every_us
            for k in range((end_us - first) // every_us + 1)
            if first + k * every_us <= end_us
        ]
        expected += len(slots)
        for slot in slots:
            key = f"trigger:{row.id}:{slot}"
            count = fired.get(key, 0)
            missed += count == 0
            doubled += count > 1
            if count:
                delays.append((by_key[key] - slot) / 1000)
    done = sum(1 for _, _, state in keys if state == "done")
    print(f"triggers: {len(rows)}; slots due: {expected}; processes started: {len(keys)}; done: {done}")
    print(f"missed: {missed}; doubled: {doubled}")
    print(
        f"firing delay: p50 {statistics.median(delays):.0f} ms, p95 {p(delays, 0.95):.0f} ms, "
        f"max {max(delays):.0f} ms"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--every", type=int, default=10, help="seconds between an agent's firings")
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with signals_raise():
        try:
            asyncio.run(run(args))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)


if __name__ == "__main__":
    cli()
