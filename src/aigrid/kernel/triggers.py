"""Always-on agents: timed triggers fire processes through the scheduler, exactly once per slot.

Each timed trigger of an agent's newest version has a row with its next firing (``store/triggers``).
Every second the service takes the due rows and starts a process for each with the spawn key
``trigger:<id>:<slot>``: a server killed between starting the process and moving the row on
starts nothing twice, because the key finds the first process. A slot more than ``grace_s`` old
was missed (the server was down): the trigger's ``missed`` policy says whether it runs once for
all the missed slots (``run_once``) or not at all (``skip``); either way it goes on from now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter, ValidationError

from aigrid.kernel.kernel import Kernel
from aigrid.spec import IntervalTrigger, TimedTrigger
from aigrid.store.accounts import AccountError
from aigrid.store.agents import StoredSpec
from aigrid.store.triggers import PlannedTrigger, TriggerRecord, TriggerStore

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_TIMED: TypeAdapter[TimedTrigger] = TypeAdapter(TimedTrigger)
_GRACE_S = 60.0


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _at(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


class TriggerService:
    """Fires agents' timed triggers on time, once each, and keeps them in step with saved versions."""

    def __init__(
        self,
        store: TriggerStore,
        kernel: Kernel,
        clock: Clock = utc_now,
        every_s: float = 1.0,
        grace_s: float = _GRACE_S,
    ) -> None:
        self._store = store
        self._kernel = kernel
        self._clock = clock
        self._every_s = every_s
        self._grace_us = int(grace_s * 1_000_000)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Handle what was missed while no server ran, then fire on time from here on."""
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="triggers")

    async def aclose(self) -> None:
        """Stop firing."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def agent_saved(self, tenant_id: int, stored: StoredSpec) -> None:
        """A new version was saved: its timed triggers replace the agent's old ones."""
        now = self._clock()
        planned = [
            PlannedTrigger(i, trigger.model_dump_json(), _first(trigger, now))
            for i, trigger in enumerate(stored.spec.triggers)
            if isinstance(trigger, TimedTrigger)
        ]
        await asyncio.to_thread(self._store.sync, tenant_id, stored.spec.name, planned)

    async def tick(self) -> int:
        """Fire every due trigger; how many processes were started."""
        started = 0
        now = _us(self._clock())
        # A trigger may be due again at once (a short interval after a slow round): go on until
        # nothing is due, each round firing a trigger at most once.
        while due := await asyncio.to_thread(self._store.due, now):
            for row in due:
                started += await self._fire(row, now)
        return started

    async def _fire(self, row: TriggerRecord, now: int) -> int:
        slot = row.next_at_us
        assert slot is not None  # due rows have a next firing
        try:
            trigger = _TIMED.validate_json(row.definition)
        except ValidationError:
            logger.exception("trigger %d of agent %s cannot be read; it is stopped", row.id, row.agent)
            await asyncio.to_thread(self._store.advance, row.id, slot, None, False)
            return 0
        missed = now - slot > self._grace_us
        fire = not missed or trigger.missed == "run_once"
        started = 0
        if fire:
            text = (
                trigger.input
                or f"It is {_at(slot).isoformat(timespec='seconds')}: time for your scheduled run."
            )
            try:
                await self._kernel.spawn(
                    row.tenant_id, row.agent, text, spawn_key=f"trigger:{row.id}:{slot}", origin="trigger"
                )
                started = 1
            except AccountError as exc:  # the agent is gone: its triggers go too
                logger.warning("trigger %d of agent %s: %s", row.id, row.agent, exc.message)
                await asyncio.to_thread(self._store.forget, row.tenant_id, row.agent)
                return 0
        following = _following(trigger, _at(slot), _at(now) if missed else None)
        await asyncio.to_thread(
            self._store.advance, row.id, slot, None if following is None else _us(following), fire
        )
        return started

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
                soonest = await asyncio.to_thread(self._store.next_at)
            except Exception:  # the database away for a moment: the next round tries again
                logger.exception("firing triggers failed")
                soonest = None
            # Wake at the next firing, and at least every ``every_s`` for triggers saved meanwhile.
            wait = self._every_s
            if soonest is not None:
                wait = min(wait, max(0.0, (soonest - _us(self._clock())) / 1_000_000))
            await asyncio.sleep(wait)


def _first(trigger: TimedTrigger, now: datetime) -> int | None:
    """When a newly saved trigger fires first."""
    first = trigger.next_after(now)
    return None if first is None else _us(first)


def _following(trigger: TimedTrigger, slot: datetime, missed_until: datetime | None) -> datetime | None:
    """The firing after ``slot``; after missed slots, the first one after ``missed_until`` (now)."""
    after = missed_until or slot
    if isinstance(trigger, IntervalTrigger) and missed_until is not None:
        # Keep the rhythm: the next slot on the same grid as the missed ones.
        every = timedelta(seconds=trigger.every_s)
        return slot + every * ((missed_until - slot) // every + 1)
    return trigger.next_after(after)
