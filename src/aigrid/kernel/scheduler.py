"""Which runnable process gets the next model call: fair between tenants, urgent work first.

- Between tenants, weighted fair share by tokens consumed, not by process count: the tenant whose
  (decayed) tokens per unit of weight are lowest goes next, so 500 processes of one tenant get the
  same share as 10 of another. A tenant that arrives or comes back starts level with the least
  served active tenant rather than with a clean slate that would let it monopolise the grid.
- `interactive` before `background`; a background process that has waited `aging_s` counts as
  interactive, so nothing starves.
- At most `tenant_cap` processes of one tenant in flight at once.

The scheduler keeps only what it needs to choose; processes themselves live in the database, so
the workers that take the chosen steps can be anywhere.
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

# A tenant with nothing waiting or running for longer than this is coming back when it adds work.
_RETURN_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class Runnable:
    """A process that waits for its next step."""

    pid: str
    tenant_id: int
    priority: str  # "interactive" or "background"
    ready_since: float  # monotonic seconds


class Scheduler(Protocol):
    """What the kernel asks of a scheduler: queue, withdraw, choose, and hear what a step used."""

    def add(self, runnable: Runnable) -> None:
        """A process waits for its next step."""

    def remove(self, pid: str) -> None:
        """A waiting process left before it was chosen."""

    def next(self, now: float) -> Runnable | None:
        """The process whose step goes next, or None if none may go now."""

    def done(self, runnable: Runnable, tokens: int, now: float) -> None:
        """A chosen step ended having consumed ``tokens``."""


class FairScheduler:
    """Chooses the next process to step; told what each step consumed and when steps end."""

    def __init__(
        self,
        *,
        tenant_cap: int = 16,
        aging_s: float = 30.0,
        half_life_s: float = 60.0,
        weights: dict[int, float] | None = None,
    ) -> None:
        if tenant_cap < 1 or aging_s <= 0 or half_life_s <= 0:
            raise ValueError("tenant_cap must be at least 1, aging_s and half_life_s above 0")
        self._cap = tenant_cap
        self._aging_s = aging_s
        self._decay = math.log(2) / half_life_s
        self._weights = dict(weights or {})
        # Per tenant and priority, waiting processes in arrival order (OrderedDict: O(1) removal).
        self._queues: dict[int, dict[str, OrderedDict[str, Runnable]]] = {}
        self._tenant_of: dict[str, int] = {}
        self._last_seen: dict[int, float] = {}
        self._running: dict[int, int] = defaultdict(int)
        self._used: dict[int, float] = {}
        self._clock = 0.0

    def __len__(self) -> int:
        return len(self._tenant_of)

    def set_weight(self, tenant_id: int, weight: float) -> None:
        """A tenant's share relative to others (1 by default)."""
        if weight <= 0:
            raise ValueError("a weight must be above 0")
        self._weights[tenant_id] = weight

    def add(self, runnable: Runnable) -> None:
        """A process waits for its next step (``ready_since`` is now, for a tenant coming back)."""
        tenant = runnable.tenant_id
        last = self._last_seen.get(tenant)
        away = last is None or runnable.ready_since - last > _RETURN_AFTER_S
        returning = away and not self._has_work(tenant)
        if returning:
            # A newcomer, or a tenant back after a pause, starts level with the least served
            # active tenant: its clean slate would otherwise buy it the whole grid for a while.
            active = [self.share(t) for t in self._queues if t != tenant and self._has_work(t)]
            self._used[tenant] = max(
                self._used.get(tenant, 0.0), min(active, default=0.0) * self._weight(tenant)
            )
        self._last_seen[tenant] = runnable.ready_since
        queues = self._queues.setdefault(
            runnable.tenant_id, {"interactive": OrderedDict(), "background": OrderedDict()}
        )
        queues["interactive" if runnable.priority == "interactive" else "background"][runnable.pid] = runnable
        self._tenant_of[runnable.pid] = runnable.tenant_id

    def remove(self, pid: str) -> None:
        """A waiting process left (killed, suspended) before it was chosen."""
        tenant = self._tenant_of.pop(pid, None)
        if tenant is not None:
            for queue in self._queues[tenant].values():
                queue.pop(pid, None)

    def next(self, now: float) -> Runnable | None:
        """The process whose step goes next, now counted as running; None if none may go."""
        self._age_to(now)
        heads: dict[int, tuple[Runnable | None, Runnable | None]] = {}
        for tenant, queues in self._queues.items():
            if self._running[tenant] >= self._cap:
                continue
            first = next(iter(queues["interactive"].values()), None)
            oldest = next(iter(queues["background"].values()), None)
            if first is not None or oldest is not None:
                heads[tenant] = (first, oldest)
        if not heads:
            return None
        urgent = {
            t: [
                r
                for r in (first, oldest)
                if r is not None and (r is first or now - r.ready_since >= self._aging_s)
            ]
            for t, (first, oldest) in heads.items()
        }
        urgent = {t: rs for t, rs in urgent.items() if rs}
        pool = urgent or {t: [oldest] for t, (_, oldest) in heads.items() if oldest is not None}
        tenant = min(pool, key=lambda t: (self.share(t), t))
        chosen = min(pool[tenant], key=lambda r: (r.ready_since, r.pid))
        self.remove(chosen.pid)
        self._running[tenant] += 1
        return chosen

    def done(self, runnable: Runnable, tokens: int, now: float) -> None:
        """A chosen step ended having consumed ``tokens``."""
        self._age_to(now)
        self._running[runnable.tenant_id] = max(0, self._running[runnable.tenant_id] - 1)
        self._last_seen[runnable.tenant_id] = now
        self._used[runnable.tenant_id] = self._used.get(runnable.tenant_id, 0.0) + tokens

    def observe(self, used: Mapping[int, float], now: float) -> None:
        """Take in what each tenant's processes used across the cluster (decayed tokens, as here).

        Each tenant's count rises to the cluster's figure (never falls: this server's latest steps
        and a returning tenant's level may not be in it yet), so servers sharing a database give
        the tenants the same shares between them as one server would.
        """
        self._age_to(now)
        for tenant, tokens in used.items():
            if tokens > self._used.get(tenant, 0.0):
                self._used[tenant] = tokens

    def share(self, tenant_id: int) -> float:
        """The tenant's decayed tokens per unit of weight: what the choice compares."""
        return self._used.get(tenant_id, 0.0) / self._weight(tenant_id)

    def _weight(self, tenant_id: int) -> float:
        return self._weights.get(tenant_id, 1.0)

    def _has_work(self, tenant_id: int) -> bool:
        queues = self._queues.get(tenant_id)
        return self._running[tenant_id] > 0 or (queues is not None and any(queues.values()))

    def _age_to(self, now: float) -> None:
        # Old consumption fades with a half-life, so a tenant's past does not count forever.
        if now <= self._clock:
            return
        factor = math.exp(-self._decay * (now - self._clock))
        self._clock = now
        for tenant in self._used:
            self._used[tenant] *= factor
