"""Admission control: rate limits and budgets that hold under concurrency.

A request reserves its worst case (prompt plus answer cap) before it is forwarded and settles to
the real count when it ends. Everything here runs on the event loop thread, so a check and its
reservation happen without another request in between.

A lone server admits from its own counts (token buckets and budget states). Servers sharing a
database also admit from quota leases (``aigrid.grid.quota``): slices of each budget and rate that
the database grants, so that the cluster as a whole keeps to the limits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from aigrid.clock import now_us, period_end_us, period_start_us
from aigrid.errors import APIError, insufficient_quota, rate_limited, retry_after
from aigrid.grid.quota import Leases, LocalGrant, Want
from aigrid.store.quota import budget_resource

PERIODS = ("day", "month", "total")
KINDS = ("tokens", "cost")


class TokenBucket:
    """A bucket refilled continuously at ``capacity`` per minute; it may go negative on settlement."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._at) * self._rate)
        self._at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken; 0 when it can be taken now."""
        self._refill()
        amount = min(amount, self.capacity)
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self._rate

    def take(self, amount: float) -> None:
        """Take ``amount`` (after ``wait_for`` said yes)."""
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        """Return what a settled request did not use (or take more if it used more)."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


def _same_or_new(bucket: TokenBucket | None, per_minute: int | None) -> TokenBucket | None:
    """The bucket for a rate: the current one if its rate is unchanged, else a new one (or none)."""
    if not per_minute:
        return None
    if bucket is not None and bucket.capacity == per_minute:
        return bucket
    return TokenBucket(per_minute)


@dataclass
class BudgetState:
    """One budget's limit with what is spent in the current period and what is reserved."""

    kind: str
    period: str
    limit: int
    spent: int = 0
    reserved: int = 0
    period_start: int = 0
    # Its quota grant's name, e.g. "tokens:day" (made once: the request path only looks it up).
    resource: str = ""
    # The end of the period that starts at ``_rolled_for`` (cached: working it out from the date on
    # every request cost more than the rest of admission together).
    _rolled_for: int = field(default=-1, repr=False, compare=False)
    _until: int = field(default=0, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.resource = budget_resource(self.kind, self.period)

    def roll(self, now: int) -> None:
        """Start a new period's count when the period has turned."""
        if self._rolled_for == self.period_start and self.period_start <= now < self._until:
            return
        start = period_start_us(self.period, now)
        if start != self.period_start:
            self.period_start = start
            self.spent = 0
        self._rolled_for, self._until = start, period_end_us(self.period, start)

    def view(self) -> dict[str, object]:
        """The budget as the API shows it."""
        return {
            "kind": self.kind,
            "period": self.period,
            "limit": self.limit,
            "spent": self.spent,
            "reserved": self.reserved,
            "remaining": max(0, self.limit - self.spent - self.reserved),
            "period_start_us": self.period_start,
        }


@dataclass
class TenantLimits:
    """What is enforced for one tenant."""

    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None
    budgets: list[BudgetState] = field(default_factory=list)


@dataclass
class Reservation:
    """What a request holds until it settles."""

    tenant_id: int
    tokens: int
    cost: int
    budgets: list[BudgetState]
    tpm: TokenBucket | None
    settled: bool = False
    # With quota leases: each grant taken from, what was taken, and the unit it settles in.
    grants: list[tuple[LocalGrant, int, str]] | None = None


class Short(APIError):
    """A 429 that more grant might lift: what to acquire before trying again."""

    def __init__(self, error: APIError, wants: list[Want]) -> None:
        super().__init__(error.status, error.message, type=error.type, code=error.code, headers=error.headers)
        self.wants = wants


class Admission:
    """Checks and reserves rate limits and budgets per tenant."""

    def __init__(self, clock: Callable[[], int] = now_us, leases: Leases | None = None) -> None:
        self._tenants: dict[int, TenantLimits] = {}
        self._clock = clock
        self.leases = leases

    def limits(self, tenant_id: int) -> TenantLimits:
        """The tenant's enforced limits (created empty on first use)."""
        found = self._tenants.get(tenant_id)
        if found is None:
            found = self._tenants[tenant_id] = TenantLimits()
        return found

    def set_rate_limits(self, tenant_id: int, rpm: int | None, tpm: int | None) -> None:
        """Replace a tenant's request and token rates."""
        lim = self.limits(tenant_id)
        lim.rpm = TokenBucket(rpm) if rpm else None
        lim.tpm = TokenBucket(tpm) if tpm else None

    def set_budget(self, tenant_id: int, kind: str, period: str, limit: int, spent: int) -> BudgetState:
        """Add or replace a budget, with what the ledger says is spent in the current period."""
        lim = self.limits(tenant_id)
        lim.budgets = [b for b in lim.budgets if not (b.kind == kind and b.period == period)]
        now = self._clock()
        state = BudgetState(kind, period, limit, spent=spent, period_start=period_start_us(period, now))
        lim.budgets.append(state)
        return state

    def remove_budget(self, tenant_id: int, kind: str, period: str) -> bool:
        """Drop a budget; returns whether there was one."""
        lim = self.limits(tenant_id)
        before = len(lim.budgets)
        lim.budgets = [b for b in lim.budgets if not (b.kind == kind and b.period == period)]
        return len(lim.budgets) != before

    def sync_budgets(self, rows: list[tuple[int, str, str, int, int]]) -> None:
        """Make the budgets those of ``rows`` (tenant id, kind, period, limit, spent), as stored.

        A budget that still exists keeps its state object, so requests in flight settle into it
        and what they reserved still counts; its spent count only rises (to what the ledger says,
        which includes what other servers spent), never falls below what this server counted.
        """
        wanted = {(tid, kind, period): (limit, spent) for tid, kind, period, limit, spent in rows}
        now = self._clock()
        for tenant_id, lim in self._tenants.items():
            kept = []
            for b in lim.budgets:
                found = wanted.pop((tenant_id, b.kind, b.period), None)
                if found is None:
                    continue
                b.roll(now)
                b.limit, b.spent = found[0], max(b.spent, found[1])
                kept.append(b)
            lim.budgets = kept
        for (tenant_id, kind, period), (limit, spent) in wanted.items():
            self.set_budget(tenant_id, kind, period, limit, spent)

    def sync_rate_limits(self, rows: list[tuple[int, int | None, int | None]]) -> None:
        """Make the rates those of ``rows`` (tenant id, rpm, tpm), as stored.

        An unchanged rate keeps its bucket (and so what it has let through this minute); a changed
        one starts a full bucket, as setting it on this server does.
        """
        wanted = {tid: (rpm, tpm) for tid, rpm, tpm in rows}
        for tenant_id in set(self._tenants) | set(wanted):
            rpm, tpm = wanted.get(tenant_id, (None, None))
            lim = self.limits(tenant_id)
            lim.rpm = _same_or_new(lim.rpm, rpm)
            lim.tpm = _same_or_new(lim.tpm, tpm)

    def budgets(self, tenant_id: int) -> list[BudgetState]:
        """A tenant's budgets, rolled to the current period."""
        now = self._clock()
        lim = self.limits(tenant_id)
        for b in lim.budgets:
            b.roll(now)
        return list(lim.budgets)

    def reserve(self, tenant_id: int, tokens: int, cost: int) -> Reservation:
        """Admit a request whose worst case is ``tokens`` and ``cost``, or raise a 429."""
        lim = self._tenants.get(tenant_id)
        if lim is None:
            return Reservation(tenant_id, tokens, cost, [], None)
        now = self._clock()
        for b in lim.budgets:
            b.roll(now)
            need = tokens if b.kind == "tokens" else cost
            if b.spent + b.reserved + need > b.limit:
                unit = "tokens" if b.kind == "tokens" else "micro-CNY"
                raise insufficient_quota(
                    f"The tenant's {b.period} {b.kind} budget is spent: {b.spent} of {b.limit} {unit} "
                    f"used, {b.reserved} reserved by requests in flight, and this request may need {need}."
                )
        if self.leases is not None:
            return self._reserve_leased(self.leases, tenant_id, lim, tokens, cost)
        if lim.rpm is not None:
            wait = lim.rpm.wait_for(1)
            if wait > 0:
                raise rate_limited(f"Rate limit reached: {int(lim.rpm.capacity)} requests per minute.", wait)
        if lim.tpm is not None and tokens > lim.tpm.capacity:
            raise rate_limited(
                f"Request too large: it may use {tokens} tokens, more than the "
                f"{int(lim.tpm.capacity)} tokens per minute allowed. Lower max_tokens or the prompt.",
                60,
            )
        if lim.tpm is not None:
            wait = lim.tpm.wait_for(tokens)
            if wait > 0:
                raise rate_limited(
                    f"Rate limit reached: {int(lim.tpm.capacity)} tokens per minute "
                    f"(this request may use {tokens}).",
                    wait,
                )
        if lim.rpm is not None:
            lim.rpm.take(1)
        if lim.tpm is not None:
            lim.tpm.take(tokens)
        for b in lim.budgets:
            b.reserved += tokens if b.kind == "tokens" else cost
        return Reservation(tenant_id, tokens, cost, list(lim.budgets), lim.tpm)

    def _reserve_leased(
        self, leases: Leases, tenant_id: int, lim: TenantLimits, tokens: int, cost: int
    ) -> Reservation:
        """Admit from the grants this server holds; a Short names what to acquire when they fall short."""
        if not leases.holds():
            raise APIError(
                503,
                "This server does not hold a live lease in the cluster right now; try another server.",
                type="api_error",
                code="not_live",
                headers=retry_after(1),
            )
        # The common case, kept lean: every grant is held and covers the request.
        grants = leases.grants
        takes: list[tuple[LocalGrant, int, str]] = []
        for b in lim.budgets:
            need = tokens if b.kind == "tokens" else cost
            if need <= 0:
                continue
            g = grants.get((tenant_id, b.resource))
            if g is None or g.start_us != b.period_start or g.granted - g.used < need:
                self._refuse(leases, tenant_id, lim, tokens, cost)
            takes.append((g, need, b.kind))
        if lim.rpm is not None or lim.tpm is not None:
            now = leases.clock()
            for which, bucket, need in (("rpm", lim.rpm, 1), ("tpm", lim.tpm, tokens)):
                if bucket is None:
                    continue
                g = grants.get((tenant_id, which))
                if g is None or now >= g.ends or need > g.limit or g.granted - g.used < need:
                    self._refuse(leases, tenant_id, lim, tokens, cost)
                takes.append((g, need, which))
        for g, need, _unit in takes:
            g.used += need
            if g.granted - g.used < g.low:
                leases.low(g)
        for b in lim.budgets:
            b.reserved += tokens if b.kind == "tokens" else cost
        return Reservation(tenant_id, tokens, cost, list(lim.budgets), None, grants=takes)

    def _refuse(self, leases: Leases, tenant_id: int, lim: TenantLimits, tokens: int, cost: int) -> NoReturn:
        """Raise why the grants fall short: a Short (what to acquire), or a 429 when the pools are empty."""
        takes: list[tuple[LocalGrant, int, str, Want]] = []
        short: list[tuple[Want, APIError]] = []
        for b in lim.budgets:
            need = tokens if b.kind == "tokens" else cost
            if need <= 0:
                continue
            want = Want(tenant_id, budget_resource(b.kind, b.period), need, b.limit, b.period_start)
            g = leases.budget(tenant_id, b.kind, b.period, b.period_start)
            if g is not None and g.left >= need:
                takes.append((g, need, b.kind, want))
                continue
            unit = "tokens" if b.kind == "tokens" else "micro-CNY"
            short.append(
                (
                    want,
                    insufficient_quota(
                        f"The tenant's {b.period} {b.kind} budget is spent across the cluster: {b.limit} "
                        f"{unit}, all spent or granted to servers, and this request may need {need}."
                    ),
                )
            )
        for which, bucket, need in (("rpm", lim.rpm, 1), ("tpm", lim.tpm, tokens)):
            if bucket is None:
                continue
            per_minute = int(bucket.capacity)
            allowance = leases.rate_allowance(per_minute)
            if need > allowance:
                raise rate_limited(
                    f"Request too large: it may use {need} tokens, more than the {allowance} tokens "
                    f"allowed per {leases.window_s:g} s ({per_minute} per minute). "
                    "Lower max_tokens or the prompt.",
                    60,
                )
            want = Want(tenant_id, which, need, allowance)
            g = leases.rate(tenant_id, which)
            if g is not None and g.left >= need:
                takes.append((g, need, which, want))
                continue
            what = "requests" if which == "rpm" else "tokens"
            extra = "" if which == "rpm" else f" (this request may use {need})"
            wait = leases.window_left_s(tenant_id, which)
            short.append(
                (want, rate_limited(f"Rate limit reached: {per_minute} {what} per minute{extra}.", wait))
            )
        if short:
            open_ = [w for w, _ in short if not leases.exhausted(w)]
            # Only pools with something left are worth a wait; else the first refusal stands.
            refusal = next((e for w, e in short if leases.exhausted(w)), short[0][1])
            if open_ and len(open_) == len(short):
                raise Short(refusal, open_)
            raise refusal
        raise AssertionError("every grant was found to cover the request after all")

    async def admit(self, tenant_id: int, tokens: int, cost: int) -> Reservation:
        """``reserve``, waiting (at most the leases' ``wait_s``) for more grant when it falls short."""
        try:
            return self.reserve(tenant_id, tokens, cost)
        except Short as first:
            leases = self.leases
            assert leases is not None
            short = first
        deadline = time.monotonic() + leases.wait_s
        while True:
            grew = await leases.fill(short.wants, deadline)
            try:
                return self.reserve(tenant_id, tokens, cost)
            except Short as again:
                if time.monotonic() >= deadline:
                    raise
                short = again
            if not grew:
                # Nothing granted though the pool has some left: what this server spent has not
                # reached the ledger yet. Ask again shortly.
                await asyncio.sleep(0.02)

    def settle(self, reservation: Reservation, tokens: int, cost: int) -> None:
        """Replace a reservation with what the request really used."""
        if reservation.settled:
            return
        reservation.settled = True
        if reservation.grants is not None:
            for g, held, unit in reservation.grants:
                if unit in {"tokens", "tpm"}:
                    g.used += tokens - held
                elif unit == "cost":
                    g.used += cost - held
        now = self._clock()
        for b in reservation.budgets:
            b.reserved -= reservation.tokens if b.kind == "tokens" else reservation.cost
            b.roll(now)
            b.spent += tokens if b.kind == "tokens" else cost
        if reservation.tpm is not None:
            reservation.tpm.give_back(reservation.tokens - tokens)
