"""Keeps this server's keys, budgets, rate limits and tool providers in step with its peers' changes.

Requests are admitted from memory (the key ring and ``Admission``), never from the database; tool
providers are open in memory too. A
change made through any server's admin API raises a counter in the database in the change's own
transaction (``aigrid.store.config_versions``); this task polls the counters every ``every_s``
with one small SELECT and reloads a kind whose counter moved. The counters are read before the
data, so a change that commits during a reload moves its counter past what was seen and is
picked up by the next poll: a change is in force here within ``every_s`` plus one poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import Engine

from aigrid.api.auth import KeyRing
from aigrid.grid.limits import Admission
from aigrid.store.accounts import AccountStore
from aigrid.store.config_versions import BUDGETS, KEYS, LIMITS, read_versions

log = logging.getLogger(__name__)


class ConfigSync:
    """Polls the config counters and reloads what moved into the key ring and admission."""

    def __init__(
        self,
        engine: Engine,
        accounts: AccountStore,
        keyring: KeyRing,
        admission: Admission,
        every_s: float,
        seen: dict[str, int],
    ) -> None:
        self._engine = engine
        self._accounts = accounts
        self._keyring = keyring
        self._admission = admission
        self._every_s = every_s
        # The counters as they were when the memory was loaded at start.
        self._seen = dict(seen)
        self._reloads: dict[str, Callable[[], Awaitable[None]]] = {
            KEYS: self._reload_keys,
            BUDGETS: self._reload_budgets,
            LIMITS: self._reload_limits,
        }
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        # Held while keys, budgets or limits in memory change, by a reload here or by an admin
        # route (its database write and its change in memory): a reload that read the database
        # just before a change made here committed would otherwise undo it until the next poll.
        self.changes = asyncio.Lock()

    def follow(self, kind: str, reload: Callable[[], Awaitable[None]]) -> None:
        """Also reload ``kind`` with ``reload`` when its counter moves (for parts built after start).

        Its counter still counts from start, so a change made before this call is reloaded too.
        """
        self._reloads[kind] = reload

    def start(self) -> None:
        """Begin polling; call on the event loop."""
        self._task = asyncio.create_task(self._run(), name="config-sync")

    async def aclose(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def poll(self) -> list[str]:
        """One poll: reload every kind whose counter moved; returns the kinds reloaded."""
        versions = await asyncio.to_thread(read_versions, self._engine)
        moved = [k for k, v in versions.items() if k in self._reloads and self._seen.get(k) != v]
        for kind in moved:
            async with self.changes:
                await self._reloads[kind]()
            # Only once reloaded: a failed reload is tried again at the next poll.
            self._seen[kind] = versions[kind]
        return moved

    async def _reload_keys(self) -> None:
        self._keyring.load(await asyncio.to_thread(self._accounts.active_keys))

    async def _reload_budgets(self) -> None:
        self._admission.sync_budgets(await asyncio.to_thread(self._accounts.all_budgets))

    async def _reload_limits(self) -> None:
        self._admission.sync_rate_limits(await asyncio.to_thread(self._accounts.all_rate_limits))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                await self.poll()
            except Exception:  # the database may be away for a while: keep what is loaded, try again
                if not self._failing:
                    log.warning("reading config changes from the database failed; retrying", exc_info=True)
                self._failing = True
                continue
            if self._failing:
                log.warning("reading config changes from the database works again")
                self._failing = False
