"""This server's quota leases: the slices of budgets and rates it may admit from without asking.

``Admission`` decides from the grants held here, with no database call while a grant covers the
request. When a request leaves a grant below its low-water mark, a refill is started in the
background (sized by recent use, a budget's capped at ``fraction`` of its limit); a request that
the grant cannot cover waits for one acquire (at most ``wait_s``). Grants belong to this server's
owner (node and epoch): a new epoch drops them all, and while the lease is not known to hold
locally none of them is used. At stop the unused parts are handed back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aigrid.store.cluster import Fenced, Owner
from aigrid.store.quota import Grant, QuotaStore, budget_resource, window_allowance

log = logging.getLogger(__name__)
# A refill asks for what recent use would consume in this many seconds.
HORIZON_S = 1.0
# An empty budget pool is asked again after this long: a lost server's grant may have come back,
# or an admin raised the limit or reset frozen grants. Until then refusals cost no database call.
RECHECK_S = 1.0


@dataclass(slots=True)
class LocalGrant:
    """One grant as this server uses it: its total, what was consumed from it, and until when it holds."""

    tenant_id: int
    resource: str
    start_us: int
    granted: int = 0
    used: int = 0
    # Monotonic end of a rate window (counted from before the acquire was sent); budgets never end
    # here: the period's turn is noticed from the budget's own period start.
    ends: float = math.inf
    # The pool had nothing left at the last acquire.
    exhausted: bool = False
    asked_at: float = 0.0
    used_at_ask: int = 0
    size: int = 0
    # Below this much left, a refill starts in the background.
    low: int = 0
    # The limit it is a slice of (a rate's allowance per window; a budget's limit).
    limit: int = 0

    @property
    def left(self) -> int:
        """What may still be consumed from the grant."""
        return self.granted - self.used


@dataclass(frozen=True, slots=True)
class Want:
    """A grant a request needs more of: which, how much, and the limit it is a slice of."""

    tenant_id: int
    resource: str
    need: int
    limit: int
    period_start_us: int = 0


class Leases:
    """The grants this server holds, their refills, and handing them back."""

    def __init__(
        self,
        store: QuotaStore,
        owner: Callable[[], Owner | None],
        holds: Callable[[], bool],
        *,
        fraction: float = 0.01,
        wait_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.window_s = store.window_s
        self.fraction = fraction
        self.wait_s = wait_s
        self._owner = owner
        self.holds = holds
        self._clock = clock
        self.clock = clock
        # By (tenant id, resource): read directly by Admission's request path.
        self.grants: dict[tuple[int, str], LocalGrant] = {}
        self._pending: dict[tuple[int, str], asyncio.Task[bool]] = {}
        self._closed = False
        self._failing = False

    def budget(self, tenant_id: int, kind: str, period: str, period_start_us: int) -> LocalGrant | None:
        """The grant of a budget for the current period, if one is held."""
        g = self.grants.get((tenant_id, budget_resource(kind, period)))
        if g is None or g.start_us != period_start_us:
            return None
        return g

    def rate(self, tenant_id: int, which: str) -> LocalGrant | None:
        """The slice of a rate for the current window, if one is held."""
        g = self.grants.get((tenant_id, which))
        if g is None or self._clock() >= g.ends:
            return None
        return g

    def window_left_s(self, tenant_id: int, which: str) -> float:
        """Seconds until the current rate window ends (a whole window when none is held)."""
        g = self.grants.get((tenant_id, which))
        if g is None or g.ends == math.inf:
            return self.window_s
        return max(0.0, g.ends - self._clock())

    def exhausted(self, want: Want) -> bool:
        """Whether the pool of ``want`` is known to be empty: for a rate, until its window ends; for a
        budget, for ``RECHECK_S`` after the acquire that found it so."""
        g = self.grants.get((want.tenant_id, want.resource))
        if g is None or not g.exhausted:
            return False
        if want.resource in ("rpm", "tpm"):
            return self._clock() < g.ends
        return g.start_us == want.period_start_us and self._clock() < g.asked_at + RECHECK_S

    def low(self, g: LocalGrant) -> None:
        """``g`` fell below its low-water mark: refill it in the background (unless its pool is empty)."""
        if g.exhausted or self._closed or (g.tenant_id, g.resource) in self._pending:
            return
        self._start(Want(g.tenant_id, g.resource, 1, g.limit, g.start_us))

    def new_epoch(self, _owner: Owner) -> None:
        """Drop every grant: those of the old epoch count as abandoned (and may have been reclaimed)."""
        self.grants.clear()

    async def fill(self, wants: list[Want], deadline: float) -> bool:
        """Acquire more for each of ``wants``, waiting until ``deadline`` at most; whether any grew."""
        tasks = [self._start(w) for w in wants]
        left = deadline - self._clock()
        if left <= 0:
            return False
        done, _ = await asyncio.wait([asyncio.shield(t) for t in tasks], timeout=left)
        return any(not t.cancelled() and t.exception() is None and t.result() for t in done)

    def _start(self, want: Want) -> asyncio.Task[bool]:
        key = (want.tenant_id, want.resource)
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._acquire(want), name=f"quota-{want.resource}")
            self._pending[key] = task
            task.add_done_callback(lambda _t: self._pending.pop(key, None))
        return task

    def _size(self, want: Want, g: LocalGrant | None, now: float) -> int:
        """How much to ask for: recent use over the horizon, at least the need; a budget's at most its cap."""
        if g is None or g.asked_at == 0.0:
            rate = 0.0
        else:
            rate = (g.used - g.used_at_ask) / max(1e-3, now - g.asked_at)
        if want.resource in ("rpm", "tpm"):
            # A first slice of a quarter, then what use asks for: unused slices are the only waste.
            first = want.limit // 4 if g is None or g.asked_at == 0.0 else 0
            return max(want.need, math.ceil(rate * HORIZON_S), first, 1)
        # A budget's grant is small by design (what a lost server may overspend), so ask for all of it.
        return max(want.need, 1, int(want.limit * self.fraction))

    async def _acquire(self, want: Want) -> bool:
        owner = self._owner()
        if owner is None or not self.holds():
            return False
        key = (want.tenant_id, want.resource)
        sent = self._clock()
        g = self.grants.get(key)
        size = self._size(want, g, sent)
        try:
            grant = await asyncio.to_thread(self._call, owner, want, size)
        except Fenced:
            return False  # the membership takes a new epoch (or stays out); the grants go with the old
        except Exception:  # the database may be away: admit from what is held, ask again later
            if not self._failing:
                log.warning("taking a quota grant failed; admitting from the grants held", exc_info=True)
            self._failing = True
            return False
        if self._failing:
            log.warning("taking quota grants works again")
            self._failing = False
        if grant is None or self._owner() != owner:
            return False
        g = self.grants.get(key)
        if g is None or g.start_us != grant.start_us:
            # What this owner spent in the period before it held the grant (requests admitted
            # before the budget existed) counts against the grant, as the database counts it.
            g = self.grants[key] = LocalGrant(
                want.tenant_id, want.resource, grant.start_us, used=grant.owner_spent
            )
        grew = grant.granted > g.granted
        g.granted = grant.granted
        g.exhausted = grant.remaining <= 0
        if grant.end_us:
            # Counted from before the request left, so the slice ends here no later than in the database.
            g.ends = sent + (grant.end_us - grant.now_us) / 1e6
        g.asked_at, g.used_at_ask, g.size = sent, g.used, size
        g.limit, g.low = grant.limit, max(1, size // 2)
        return grew

    def _call(self, owner: Owner, want: Want, size: int) -> Grant | None:
        if want.resource in ("rpm", "tpm"):
            return self.store.acquire_rate(owner, want.tenant_id, want.resource, size)
        kind, period = want.resource.split(":")
        cap = max(1, int(want.limit * self.fraction))
        return self.store.acquire_budget(owner, want.tenant_id, kind, period, size, max(cap, want.need))

    def rate_allowance(self, per_minute: int) -> int:
        """A rate's allowance per window."""
        return window_allowance(per_minute, self.window_s)

    async def aclose(self) -> None:
        """Stop refilling and hand back what was not used."""
        self._closed = True
        pending = list(self._pending.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        owner = self._owner()
        if owner is None:
            return
        grants = list(self.grants.values())
        self.grants.clear()
        try:
            await asyncio.to_thread(self._release_all, owner, grants)
        except Exception:  # a dead owner's grants are reclaimed or frozen by the others anyway
            log.warning("could not hand back this node's quota grants", exc_info=True)

    def _release_all(self, owner: Owner, grants: list[LocalGrant]) -> None:
        for g in grants:
            if g.granted > g.used:
                self.store.release(owner, g.tenant_id, g.resource, g.start_us, g.used)
