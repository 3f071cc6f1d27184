"""The super entry: a sentence becomes a plan, a confirmation and a saga across services.

Each entry's work runs as a task of this service, not of the request that asked: a client that
goes away leaves the saga running, and the request only waits for it (for a while). A restarted
server ends what it finds open: a plan interrupted before anything changed fails, a confirmed
saga goes on (or on undoing) from its journal.

In a cluster the server that plans or carries out an entry owns it (its node and epoch). Recovery
claims only entries whose owner's lease has ended, at start and every ``lease_s`` after, so each
is recovered by exactly one server and a live peer's work is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import date
from typing import Any, Literal, Protocol

import orjson

from aigrid.entry import answers
from aigrid.entry.calls import Caller
from aigrid.entry.catalog import Catalog, catalog
from aigrid.entry.plan import PlanError
from aigrid.entry.planner import MAX_INPUT_CHARS, Planned, Planner, TurnedDown, checked
from aigrid.entry.reading import read
from aigrid.entry.registry import ServiceRegistry
from aigrid.entry.saga import Saga
from aigrid.errors import APIError
from aigrid.kernel.tools import ToolRegistry
from aigrid.store.accounts import AccountError
from aigrid.store.cluster import Fenced, Owner
from aigrid.store.db import StoreCalls
from aigrid.store.entries import FINAL_ENTRY_STATES, OPEN_SAGA_STATES, EntryRecord, EntryState, EntryStore
from aigrid.store.payers import checked_user

log = logging.getLogger(__name__)

DEFAULT_WAIT_S = 120.0


class EntryObserver(Protocol):
    """Is told how each entry was planned and how it ended (the learning loop's traces)."""

    async def planned(
        self, entry: EntryRecord, planned: Planned | None, error: str | None, seconds: float
    ) -> None:
        """The planner wrote ``planned`` for ``entry`` (None: the plan was given, or none held)."""

    async def ended(self, entry: EntryRecord) -> None:
        """``entry`` reached a final state: done, failed or declined."""


class EntryService:
    """Takes sentences, asks once, carries out and recovers sagas."""

    def __init__(
        self,
        store: EntryStore,
        registry: ServiceRegistry,
        tools: ToolRegistry,
        planner: Planner,
        calls: StoreCalls,
        refusal: Callable[[int, str], str | None],
        today: Callable[[], date] = date.today,
        observer: EntryObserver | None = None,
        owner: Callable[[], Owner | None] = lambda: None,
    ) -> None:
        self.store = store
        self._owner = owner  # this server's node and epoch now; None outside a cluster
        self._refusal = refusal
        self._observer = observer
        self._registry = registry
        self._tools = tools
        self._planner = planner
        self.calls = calls
        self._today = today
        self._tasks: set[asyncio.Task[EntryRecord]] = set()
        self._recovering: asyncio.Task[None] | None = None

    async def catalog(self, tenant_id: int) -> Catalog:
        """What the tenant's entries can call now."""
        return catalog(await self._registry.services(), self._tools, tenant_id)

    async def ask(
        self,
        tenant_id: int,
        user: str,
        text: str,
        *,
        confirm: bool = False,
        plan: dict[str, Any] | None = None,
        wait_s: float = DEFAULT_WAIT_S,
    ) -> EntryRecord:
        """Plan ``text`` (or run the ``plan`` given), read, and ask; with ``confirm``, carry it out too."""
        text = " ".join(text.split())
        if not text:
            raise AccountError(400, "Say in a sentence what you want done.")
        if len(text) > MAX_INPUT_CHARS:
            raise AccountError(
                400, f"The sentence is longer than {MAX_INPUT_CHARS} characters; say it shorter."
            )
        why = await self.calls(self._refusal, tenant_id, checked_user(user))
        if why is not None:
            raise AccountError(403, why)
        try:
            entry = await self.calls(self.store.create, tenant_id, user, text, self._owned())
        except Fenced as exc:
            raise _not_live(exc) from exc
        return await self._wait(self._start(self._prepare(entry, plan, confirm)), entry, wait_s)

    async def confirm(
        self, tenant_id: int | None, entry_id: str, wait_s: float = DEFAULT_WAIT_S
    ) -> EntryRecord:
        """Carry out an entry waiting for its confirmation; 409 if it is not waiting."""
        moved = await self._answered(tenant_id, entry_id, "running", take=self._owned())
        return await self._wait(self._start(self._carry_out(moved)), moved, wait_s)

    async def decline(self, tenant_id: int | None, entry_id: str) -> EntryRecord:
        """Say no to an entry waiting for its confirmation: nothing is done; 409 if it is not waiting."""
        declined = await self._answered(tenant_id, entry_id, "declined", "Declined: nothing was bought.")
        await self._tell_ended(declined)
        return declined

    def _owned(self) -> Owner | None:
        """This server's owner for new work (None outside a cluster)."""
        return self._owner()

    async def _answered(
        self,
        tenant_id: int | None,
        entry_id: str,
        state: EntryState,
        answer: str | None = None,
        take: Owner | None = None,
    ) -> EntryRecord:
        """The entry moved on from waiting for its confirmation; 404 if unknown, 409 if not waiting."""
        entry = await self.calls(self.store.get, entry_id, tenant_id)
        moved = await self.calls(
            self.store.move, entry.id, ["awaiting_confirmation"], state, answer=answer, take=take
        )
        if moved is None and take is not None:
            still = await self.calls(self.store.get, entry.id)
            if still.state == "awaiting_confirmation":  # it waits, but this server's lease ended
                raise _not_live(Fenced(take, "its lease ended"))
            entry = still
        if moved is None:
            raise AccountError(409, f"Entry {entry.id} is {entry.state}, not waiting for a confirmation.")
        return moved

    async def recover(self) -> int:
        """End what a stopped server left open; how many sagas go on.

        In a cluster, only the entries this server claims: those whose owner's lease has ended
        (a live peer's are its own to finish). A fenced server claims nothing.
        """
        owner = self._owner()
        if owner is None:  # alone: everything open was left by an earlier run
            found = await self.calls(self.store.in_states, ["planning", *OPEN_SAGA_STATES])
        else:
            try:
                found = await self.calls(self.store.claim, owner)
            except Fenced:
                return 0
        open_sagas = [e for e in found if e.state in OPEN_SAGA_STATES]
        for entry in found:
            if entry.state == "planning":
                await self.calls(
                    self.store.move,
                    entry.id,
                    ["planning"],
                    "failed",
                    answer="Nothing was done: the server stopped while planning.",
                    owner=entry.owner,
                )
        for entry in open_sagas:
            log.warning("entry %s: carrying on the saga a stopped server left %s", entry.id, entry.state)
            self._start(self._carry_out(entry))
        return len(open_sagas)

    def start_recovery(self, every_s: float) -> None:
        """Recover every ``every_s`` the entries of servers whose lease ended; call on the loop."""
        self._recovering = asyncio.get_running_loop().create_task(
            self._recover_forever(every_s), name="entry-recovery"
        )

    def new_epoch(self, owner: Owner) -> None:
        """This server was fenced and rejoined as ``owner``: its sagas under the old epoch stop.

        Their writes would be refused anyway; the entries are claimed again (by this server or a
        peer) and go on from their journals.
        """
        log.warning("fenced: stopping %d entry task(s) of the old epoch", len(self._tasks))
        for task in list(self._tasks):
            task.cancel()

    async def _recover_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.recover()
            except Exception:  # the database away for a while: the next round tries again
                log.warning("recovering entries of stopped servers failed", exc_info=True)

    async def close(self) -> None:
        """Stop working: sagas stay journaled and go on at the next start."""
        if self._recovering is not None:
            self._recovering.cancel()
            await asyncio.gather(self._recovering, return_exceptions=True)
            self._recovering = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _start(self, work: Coroutine[Any, Any, EntryRecord]) -> asyncio.Task[EntryRecord]:
        task = asyncio.get_running_loop().create_task(self._observed(work))
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    async def _observed(self, work: Coroutine[Any, Any, EntryRecord]) -> EntryRecord:
        ended = await work
        if ended.state in FINAL_ENTRY_STATES:
            await self._tell_ended(ended)
        return ended

    async def _tell_ended(self, entry: EntryRecord) -> None:
        if self._observer is None:
            return
        try:
            await self._observer.ended(entry)
        except Exception:  # learning from an entry never changes how it went
            log.exception("the observer of entry %s failed", entry.id)

    async def _tell_planned(
        self, entry: EntryRecord, planned: Planned | None, error: str | None, began: float
    ) -> None:
        if self._observer is None:
            return
        try:
            await self._observer.planned(entry, planned, error, time.perf_counter() - began)
        except Exception:
            log.exception("the observer of entry %s failed", entry.id)

    def _ended(self, task: asyncio.Task[EntryRecord]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        if isinstance(error := task.exception(), Fenced):
            log.warning("an entry's work stopped: %s; the server that claims it goes on", error)
        elif error is not None:
            log.error("an entry's work failed; it goes on at the next start", exc_info=error)

    async def _wait(self, task: asyncio.Task[EntryRecord], entry: EntryRecord, wait_s: float) -> EntryRecord:
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait_s)
        except TimeoutError:
            return await self.calls(self.store.get, entry.id)
        except Fenced:  # this server lost the entry (it was paused): the claimer carries it on
            return await self.calls(self.store.get, entry.id)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise  # the request itself was cancelled
            # The work was stopped (a new epoch, a clean stop): it goes on where it is claimed.
            return await self.calls(self.store.get, entry.id)

    async def _prepare(self, entry: EntryRecord, given: dict[str, Any] | None, confirm: bool) -> EntryRecord:
        began = time.perf_counter()
        planned: Planned | None = None
        caller = Caller(entry.id, entry.tenant_id)
        try:
            found = await self.catalog(entry.tenant_id)
            if given is not None:
                plan = checked(orjson.dumps(given).decode(), found)
            else:
                planned = await self._planner.plan(
                    entry.tenant_id,
                    entry.user,
                    entry.input,
                    found,
                    self._today(),
                    lambda plan: read(plan, found, caller),
                )
                plan = planned.plan
            await self._tell_planned(entry, planned, None, began)
            if not plan.steps:
                raise PlanError("none of the registered services can do that")
            rehearsed = planned.reading if planned is not None else None
            reading = rehearsed if rehearsed is not None else await read(plan, found, caller)
        except PlanError as exc:
            if isinstance(exc, TurnedDown):  # the plan held; the world said no
                await self._tell_planned(entry, exc.planned, None, began)
            elif planned is None and given is None:
                await self._tell_planned(entry, None, str(exc), began)
            return await self._end_planning(entry, "failed", f"Nothing was done: {exc}.")
        except APIError as exc:  # the planner's model: a budget, an upstream down
            await self._tell_planned(entry, None, f"the planner failed: {exc.message}", began)
            return await self._end_planning(
                entry, "failed", f"Nothing was done: the planner failed: {exc.message}"
            )
        plan_json = plan.model_dump(mode="json", by_alias=True)
        if not reading.purchases:
            return await self._end_planning(entry, "done", answers.found(reading.chosen), plan_json)
        summary = answers.summary(reading.purchases, entry.user, found.payment)
        state: EntryState = "running" if confirm else "awaiting_confirmation"
        moved = await self.calls(
            self.store.move, entry.id, ["planning"], state, plan=plan_json, summary=summary, owner=entry.owner
        )
        if moved is None:
            return await self.calls(self.store.get, entry.id)
        return await self._carry_out(moved) if confirm else moved

    async def _end_planning(
        self,
        entry: EntryRecord,
        state: Literal["done", "failed"],
        text: str,
        plan: dict[str, Any] | None = None,
    ) -> EntryRecord:
        moved = await self.calls(
            self.store.move, entry.id, ["planning"], state, plan=plan, answer=text, owner=entry.owner
        )
        return moved if moved is not None else await self.calls(self.store.get, entry.id)

    async def _carry_out(self, entry: EntryRecord) -> EntryRecord:
        catalog = lambda: self.catalog(entry.tenant_id)  # noqa: E731
        return await Saga(entry, self.store, catalog, self.calls, entry.owner).run()


def _not_live(exc: Fenced) -> AccountError:
    """A fenced server takes no new work: the client tries another server."""
    return AccountError(503, f"This server is not live in its cluster ({exc.reason}); try another one.")
