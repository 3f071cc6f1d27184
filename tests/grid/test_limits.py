"""Admission: rate limits and budgets, reservation and settlement."""

from __future__ import annotations

import pytest

from aigrid.clock import period_start_us
from aigrid.errors import APIError
from aigrid.grid.limits import Admission, TokenBucket

DAY_US = 86_400_000_000


class FakeSeconds:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_per_minute() -> None:
    clock = FakeSeconds()
    bucket = TokenBucket(60, clock)
    assert bucket.wait_for(60) == 0
    bucket.take(60)
    assert bucket.wait_for(1) == pytest.approx(1.0)
    clock.now += 30
    assert bucket.wait_for(30) == 0
    bucket.give_back(1000)
    assert bucket.level == 60, "giving back never overfills"


def test_budget_reservations_hold_until_settled() -> None:
    admission = Admission(clock=lambda: 10 * DAY_US)
    admission.set_budget(1, "tokens", "day", limit=100, spent=0)
    first = admission.reserve(1, tokens=60, cost=0)
    with pytest.raises(APIError) as err:
        admission.reserve(1, tokens=60, cost=0)
    assert err.value.status == 429 and err.value.code == "insufficient_quota"
    admission.settle(first, tokens=20, cost=0)
    admission.settle(first, tokens=20, cost=0)
    assert admission.budgets(1)[0].spent == 20, "settling twice counts once"
    admission.reserve(1, tokens=60, cost=0)


def test_cost_budget_uses_cost_not_tokens() -> None:
    admission = Admission(clock=lambda: 10 * DAY_US)
    admission.set_budget(1, "cost", "total", limit=1000, spent=990)
    admission.reserve(1, tokens=10_000, cost=5)
    with pytest.raises(APIError):
        admission.reserve(1, tokens=1, cost=6)


def test_day_budget_starts_over_the_next_day() -> None:
    now = [10 * DAY_US + 5]
    admission = Admission(clock=lambda: now[0])
    admission.set_budget(1, "tokens", "day", limit=10, spent=10)
    with pytest.raises(APIError):
        admission.reserve(1, tokens=1, cost=0)
    now[0] += DAY_US
    admission.reserve(1, tokens=1, cost=0)


def test_rate_limits_answer_with_retry_after() -> None:
    admission = Admission()
    admission.set_rate_limits(1, rpm=1, tpm=None)
    admission.reserve(1, tokens=1, cost=0)
    with pytest.raises(APIError) as err:
        admission.reserve(1, tokens=1, cost=0)
    assert err.value.code == "rate_limit_exceeded" and int(err.value.headers["Retry-After"]) >= 1


def test_a_request_larger_than_the_token_rate_is_refused_outright() -> None:
    admission = Admission()
    admission.set_rate_limits(1, rpm=None, tpm=100)
    with pytest.raises(APIError) as err:
        admission.reserve(1, tokens=101, cost=0)
    assert "Request too large" in err.value.message


def test_tenants_without_limits_are_admitted() -> None:
    reservation = Admission().reserve(7, tokens=10**9, cost=10**12)
    assert reservation.budgets == []


def test_period_starts() -> None:
    now = 1_790_000_000_000_000  # 2026-09-21T13:33:20Z
    assert period_start_us("total", now) == 0
    assert period_start_us("day", now) == 1_789_948_800_000_000
    assert period_start_us("month", now) == 1_788_220_800_000_000
