"""The scheduler's choices: fair shares by tokens, urgent work first, aging, caps and weights."""

from __future__ import annotations

from collections import Counter

import pytest

from aigrid.kernel.scheduler import FairScheduler, Runnable


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def simulate(scheduler: FairScheduler, steps: int, tokens: dict[int, int] | None = None) -> Counter[int]:
    """Pick `steps` times; each chosen process consumes its tenant's tokens and waits again."""
    served: Counter[int] = Counter()
    now = 0.0
    for _ in range(steps):
        now += 0.01
        chosen = scheduler.next(now)
        assert chosen is not None
        used = (tokens or {}).get(chosen.tenant_id, 100)
        served[chosen.tenant_id] += used
        scheduler.done(chosen, used, now)
        scheduler.add(Runnable(chosen.pid, chosen.tenant_id, chosen.priority, now))
    return served


def test_shares_follow_tokens_not_process_counts() -> None:
    scheduler = FairScheduler(tenant_cap=1000)
    for i in range(10):
        scheduler.add(Runnable(f"a{i}", 1, "background", 0.0))
    for i in range(500):
        scheduler.add(Runnable(f"b{i}", 2, "background", 0.0))
    served = simulate(scheduler, 4000)
    assert jain([served[1], served[2]]) > 0.99
    assert abs(served[1] - served[2]) / max(served.values()) < 0.10


def test_a_tenant_with_costlier_steps_gets_fewer_of_them() -> None:
    scheduler = FairScheduler(tenant_cap=1000)
    scheduler.add(Runnable("a", 1, "background", 0.0))
    scheduler.add(Runnable("b", 2, "background", 0.0))
    served = simulate(scheduler, 3000, tokens={1: 300, 2: 100})
    assert abs(served[1] - served[2]) / max(served.values()) < 0.10, "tokens, not steps, are shared"


def test_weights_divide_the_tokens() -> None:
    scheduler = FairScheduler(tenant_cap=1000, weights={1: 2.0})
    scheduler.add(Runnable("a", 1, "background", 0.0))
    scheduler.add(Runnable("b", 2, "background", 0.0))
    served = simulate(scheduler, 3000)
    assert 1.8 < served[1] / served[2] < 2.2


def test_interactive_goes_first_and_background_ages_in() -> None:
    scheduler = FairScheduler(aging_s=5.0)
    scheduler.add(Runnable("bg", 1, "background", 0.0))
    scheduler.add(Runnable("ui", 1, "interactive", 1.0))
    first = scheduler.next(2.0)
    assert first is not None and first.pid == "ui"
    scheduler.done(first, 10, 2.0)
    scheduler.add(Runnable("ui2", 2, "interactive", 7.0))
    aged = scheduler.next(7.0)
    assert aged is not None and aged.pid == "bg", "waiting 7 s beat a fresh interactive one of another tenant"


def test_a_tenant_never_exceeds_its_cap_and_a_newcomer_starts_level() -> None:
    scheduler = FairScheduler(tenant_cap=2)
    for i in range(5):
        scheduler.add(Runnable(f"a{i}", 1, "interactive", float(i)))
    picked = [scheduler.next(10.0) for _ in range(3)]
    assert [p.pid for p in picked if p] == ["a0", "a1"] and picked[2] is None
    for p in picked[:2]:
        assert p is not None
        scheduler.done(p, 10_000, 10.0)
    scheduler.add(Runnable("b0", 2, "interactive", 10.0))
    served = simulate(scheduler, 200)
    assert served[2] <= served[1] * 1.2, "the newcomer did not get the whole grid to catch up"


def test_removed_processes_are_not_chosen_and_bad_settings_are_refused() -> None:
    scheduler = FairScheduler()
    scheduler.add(Runnable("gone", 1, "interactive", 0.0))
    scheduler.remove("gone")
    assert scheduler.next(1.0) is None and len(scheduler) == 0
    with pytest.raises(ValueError):
        FairScheduler(tenant_cap=0)
    with pytest.raises(ValueError):
        scheduler.set_weight(1, 0)


def test_the_fair_scheduler_takes_in_what_tenants_used_on_other_servers() -> None:
    scheduler = FairScheduler()
    scheduler.add(Runnable("p1", 1, "interactive", 0.0))
    scheduler.add(Runnable("p2", 2, "interactive", 0.0))
    # Here both used nothing; across the cluster tenant 1 used a lot: tenant 2 goes first.
    scheduler.observe({1: 10_000.0, 2: 100.0}, 0.0)
    assert scheduler.share(1) == 10_000.0
    chosen = scheduler.next(0.0)
    assert chosen is not None and chosen.tenant_id == 2
    scheduler.done(chosen, 50, 0.0)
    scheduler.observe({2: 10.0}, 0.0)  # a figure below what this server counted does not lower it
    assert scheduler.share(2) == 150.0
