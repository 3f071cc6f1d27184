"""The always-on loop: a round at the schedule's times, only when enough new verified traces came in."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aigrid.kernel.model import ModelRoles
from aigrid.learn.loop import Round, RoundSettings, SelfTraining


class CountingTracesDouble:
    """Verified traces that grow between firings, as a busy grid's would."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = counts

    def count(self, kind: str, outcome: str) -> int:
        assert (kind, outcome) == ("entry", "success")
        return self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]


async def _inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


async def test_a_round_runs_at_a_firing_only_after_enough_new_verified_traces() -> None:
    roles = ModelRoles({"planner": "local", "compiler": "local", "agents": "local"})
    traces = CountingTracesDouble([0, 1, 3, 3, 6])  # at the start, then at each firing
    loop = SelfTraining(None, None, None, roles, traces, _inline)  # type: ignore[arg-type]
    started: list[RoundSettings] = []

    def start(tenant_id: int, settings: RoundSettings) -> Round:
        started.append(settings)
        return Round(f"round-{len(started)}", tenant_id, settings)

    loop.start = start  # type: ignore[method-assign]
    # Six cron fields: every second, so the test sees four firings in about four seconds.
    task = asyncio.create_task(loop.scheduled(1, "* * * * * *", min_new=2))
    for _ in range(80):
        await asyncio.sleep(0.1)
        if len(traces.counts) == 1 and len(started) == 2:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [s.kind for s in started] == ["planner", "planner"], "at 3 (3 new) and at 6 (3 new), not at 1"
