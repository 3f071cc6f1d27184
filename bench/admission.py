#!/usr/bin/env python3
"""What admission costs per request: ``Admission.reserve`` + ``settle``, ns per call, side by side.

Three cases on the same tenant shape (a tokens/day and a cost/month budget, rpm and tpm):

* ``none``: a tenant without limits (the floor);
* ``local``: a lone server's counts (token buckets and budget states), as before quota leases;
* ``leases``: admission from quota grants already in hand (no database call on this path).

    .venv/bin/python bench/admission.py [--calls 200000] [--rounds 5]

The grants of the ``leases`` case are taken once from a scratch SQLite database before timing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aigrid.grid.limits import Admission
from aigrid.grid.quota import Leases
from aigrid.store.accounts import AccountStore
from aigrid.store.cluster import ClusterStore
from aigrid.store.db import make_engine, migrate
from aigrid.store.quota import QuotaStore

BIG = 10**15
RATE = 10**9


def _limits(admission: Admission, tenant_id: int) -> None:
    admission.set_budget(tenant_id, "tokens", "day", BIG, 0)
    admission.set_budget(tenant_id, "cost", "month", BIG, 0)
    admission.set_rate_limits(tenant_id, RATE, RATE)


def _time(admission: Admission, tenant_id: int, calls: int) -> float:
    reserve, settle = admission.reserve, admission.settle
    start = time.perf_counter_ns()
    for _ in range(calls):
        settle(reserve(tenant_id, 100, 50), 80, 40)
    return (time.perf_counter_ns() - start) / calls


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'bench.db'}")
        migrate(engine)
        accounts = AccountStore(engine)
        tenant_id = accounts.ensure_tenant("bench")
        accounts.set_budget("bench", "tokens", "day", BIG)
        accounts.set_budget("bench", "cost", "month", BIG)
        accounts.set_rate_limits("bench", RATE, RATE)
        owner = ClusterStore(engine).register("bench", 3600, None, {})
        # An hour-long rate window, so that no window turns (and asks again) while timing.
        leases = Leases(QuotaStore(engine, window_s=3600), lambda: owner, lambda: True)
        cases = {"none": Admission(), "local": Admission(), "leases": Admission(leases=leases)}
        _limits(cases["local"], tenant_id)
        _limits(cases["leases"], tenant_id)
        # Take the grants once: from here on the leases case decides from memory.
        cases["leases"].settle(await cases["leases"].admit(tenant_id, 100, 50), 80, 40)
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, admission in cases.items():
                results[name].append(
                    _time(admission, tenant_id if name != "none" else tenant_id + 1, args.calls)
                )
        print(f"reserve + settle, ns per call (median of {args.rounds} rounds of {args.calls} calls)")
        for name, runs in results.items():
            print(f"  {name:7s} {statistics.median(runs):8.0f}   (min {min(runs):.0f}, max {max(runs):.0f})")
        engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
