"""Admission brought in line with the stored budgets and rates, as the config sync does."""

from __future__ import annotations

from aigrid.grid.limits import Admission

DAY_US = 86_400_000_000


def test_syncing_budgets_keeps_the_state_of_those_that_stay() -> None:
    admission = Admission(clock=lambda: 10 * DAY_US + 5)
    kept = admission.set_budget(1, "tokens", "day", 100, spent=10)
    admission.set_budget(1, "cost", "day", 50, spent=0)
    held = admission.reserve(1, 20, 0)
    admission.sync_budgets([(1, "tokens", "day", 200, 4), (2, "tokens", "month", 30, 7)])
    [same] = admission.budgets(1)
    assert same is kept, "requests in flight settle into the same state"
    assert (same.limit, same.spent, same.reserved) == (200, 10, 20), "spent never falls, reserved stays"
    assert [(b.kind, b.period, b.limit, b.spent) for b in admission.budgets(2)] == [
        ("tokens", "month", 30, 7)
    ]
    admission.settle(held, 15, 0)
    assert (same.spent, same.reserved) == (25, 0)
    # What the ledger knows others spent counts once it is above this server's own count.
    admission.sync_budgets([(1, "tokens", "day", 200, 90)])
    assert same.spent == 90
    assert admission.budgets(2) == []


def test_syncing_rates_keeps_an_unchanged_bucket_and_replaces_a_changed_one() -> None:
    admission = Admission()
    admission.set_rate_limits(1, 10, 1000)
    admission.set_rate_limits(2, 5, None)
    lim = admission.limits(1)
    rpm, tpm = lim.rpm, lim.tpm
    admission.reserve(1, 100, 0)
    admission.sync_rate_limits([(1, 10, 2000), (3, None, 50)])
    assert lim.rpm is rpm, "what it let through this minute still counts"
    assert lim.tpm is not tpm and lim.tpm is not None and lim.tpm.capacity == 2000
    assert admission.limits(2).rpm is None and admission.limits(2).tpm is None
    three = admission.limits(3)
    assert three.rpm is None and three.tpm is not None and three.tpm.capacity == 50
