"""Timed triggers on a controllable clock: on time, once per slot, through restarts and missed firings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session
from tests.kernel.doubles import KernelDB, ReactiveModelMock, answer

from aigrid.kernel.kernel import Kernel
from aigrid.kernel.triggers import TriggerService
from aigrid.store.schema import AgentTrigger
from aigrid.store.triggers import TriggerStore

pytestmark = pytest.mark.asyncio

MONDAY_7AM_SHANGHAI = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # Monday 07:00 at UTC+8


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Rig:
    """A kernel database, a kernel that is not started (processes wait in it) and a trigger service."""

    def __init__(self, tmp_path: Path, clock: FakeClock) -> None:
        tmp_path.mkdir(exist_ok=True)
        self.db = KernelDB(tmp_path)
        self.kernel: Kernel = self.db.kernel(ReactiveModelMock(lambda _messages: answer("checked")))
        self.store = TriggerStore(self.db.agents._engine)
        self.triggers = TriggerService(self.store, self.kernel, clock)

    async def save(self, **spec: Any) -> None:
        await self.triggers.agent_saved(self.db.tenant, self.db.save(name="watcher", **spec))

    def fired(self) -> list[str]:
        """The inputs of the processes the triggers started, oldest first."""
        started = [p for p in self.db.processes.find(self.db.tenant, limit=1000) if p.origin == "trigger"]
        return [p.input for p in sorted(started, key=lambda p: p.created_at_us)]


async def test_an_interval_fires_once_per_slot_and_keeps_its_rhythm(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    rig = Rig(tmp_path, clock)
    await rig.save(triggers=[{"kind": "interval", "every_s": 60, "input": "check the price"}])
    assert await rig.triggers.tick() == 0, "nothing is due before the first interval has passed"
    clock.advance(seconds=61)
    assert await rig.triggers.tick() == 1
    assert await rig.triggers.tick() == 0, "a slot fires once, however often the service looks"
    clock.advance(seconds=59)  # 12:02:00, the second slot on the same grid
    assert await rig.triggers.tick() == 1
    assert rig.fired() == ["check the price", "check the price"]
    (row,) = rig.store.of(rig.db.tenant, "watcher")
    assert row.next_at_us == int(datetime(2026, 11, 22, 12, 3, tzinfo=UTC).timestamp() * 1e6)


async def test_a_weekday_cron_fires_at_eight_in_the_owners_time_zone(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_7AM_SHANGHAI - timedelta(days=2))  # Saturday 07:00 in Shanghai
    rig = Rig(tmp_path, clock)
    await rig.save(triggers=[{"kind": "cron", "cron": "0 8 * * 1-5", "timezone": "Asia/Shanghai"}])
    clock.advance(hours=25)  # Sunday 08:00: not a weekday
    assert await rig.triggers.tick() == 0
    clock.now = MONDAY_7AM_SHANGHAI + timedelta(hours=1)
    assert await rig.triggers.tick() == 1
    assert rig.fired() == ["It is 2026-11-23T00:00:00+00:00: time for your scheduled run."]


async def test_missed_firings_run_once_at_start_or_are_skipped_as_the_spec_says(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    once, skip = Rig(tmp_path / "once", clock), Rig(tmp_path / "skip", clock)
    await once.save(triggers=[{"kind": "interval", "every_s": 60, "missed": "run_once"}])
    await skip.save(triggers=[{"kind": "interval", "every_s": 60, "missed": "skip"}])
    clock.advance(minutes=10, seconds=30)  # the server was down for ten slots
    assert await once.triggers.tick() == 1, "one run for all the missed slots"
    assert await skip.triggers.tick() == 0
    for rig in (once, skip):
        (row,) = rig.store.of(rig.db.tenant, "watcher")
        assert row.next_at_us == int(datetime(2026, 11, 22, 12, 11, tzinfo=UTC).timestamp() * 1e6)


async def test_a_restart_between_starting_a_run_and_recording_it_starts_nothing_twice(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    rig = Rig(tmp_path, clock)
    await rig.save(triggers=[{"kind": "interval", "every_s": 60}])
    clock.advance(seconds=60)
    (row,) = rig.store.of(rig.db.tenant, "watcher")
    assert await rig.triggers.tick() == 1
    # As if the server died after the process was started and before the trigger moved on.
    with Session(rig.db.agents._engine) as session, session.begin():
        session.execute(
            update(AgentTrigger).where(AgentTrigger.id == row.id).values(next_at_us=row.next_at_us)
        )
    restarted = TriggerService(rig.store, rig.kernel, clock)
    await restarted.tick()
    assert len(rig.fired()) == 1


async def test_a_new_version_keeps_an_unchanged_schedule_and_replaces_a_changed_one(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    rig = Rig(tmp_path, clock)
    await rig.save(triggers=[{"kind": "interval", "every_s": 600}])
    (first,) = rig.store.of(rig.db.tenant, "watcher")
    clock.advance(minutes=5)
    await rig.save(instructions="Watch closely.", triggers=[{"kind": "interval", "every_s": 600}])
    (kept,) = rig.store.of(rig.db.tenant, "watcher")
    assert kept.next_at_us == first.next_at_us, "editing the instructions does not reset the schedule"
    await rig.save(triggers=[{"kind": "interval", "every_s": 60}])
    (changed,) = rig.store.of(rig.db.tenant, "watcher")
    assert changed.next_at_us == int((clock.now + timedelta(seconds=60)).timestamp() * 1e6)
    await rig.save(triggers=[])
    assert rig.store.of(rig.db.tenant, "watcher") == []


async def test_a_one_shot_fires_once_and_then_never(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    rig = Rig(tmp_path, clock)
    await rig.save(triggers=[{"kind": "once", "at": "2026-11-22T14:00:00+00:00", "input": "remind me"}])
    clock.advance(hours=2)
    assert await rig.triggers.tick() == 1
    clock.advance(days=1)
    assert await rig.triggers.tick() == 0
    assert rig.fired() == ["remind me"]


async def test_a_trigger_result_reaches_the_inbox(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    rig = Rig(tmp_path, clock)
    rig.kernel.add_end_listener(rig.db.inbox.result)
    await rig.save(triggers=[{"kind": "interval", "every_s": 60}])
    await rig.kernel.start()
    try:
        clock.advance(seconds=60)
        await rig.triggers.tick()
        async with asyncio.timeout(10):
            while not (messages := rig.db.messages.messages(rig.db.tenant)):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        await rig.kernel.close()
    (message,) = messages
    assert (message.kind, message.agent, message.text) == ("result", "watcher", "checked")
