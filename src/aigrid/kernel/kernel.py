"""The kernel: processes started, stepped by workers in the scheduler's order, signalled, recovered.

Workers are asyncio tasks, at most ``workers`` at once (a step is mostly waiting on a model or a
tool). Everything a worker needs is read from the database at each step, so workers elsewhere (Ray
actors, later) can take the same steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aigrid.kernel.runner import BUDGET_REASON, SLEEP_REASON, Runner
from aigrid.kernel.scheduler import FairScheduler, Runnable, Scheduler
from aigrid.store.accounts import AccountError
from aigrid.store.agents import AgentStore
from aigrid.store.cluster import Owner
from aigrid.store.db import unreachable
from aigrid.store.process_claims import ProcessClaims
from aigrid.store.processes import NotOwner, ProcessRecord, ProcessStore

logger = logging.getLogger(__name__)

Signal = Literal["pause", "resume", "kill"]
# Called with every process that ends, after its final state is committed.
EndListener = Callable[[ProcessRecord], Awaitable[None]]
# This server's owner (node and epoch) now; None on a kernel outside a cluster (tests, tools).
OwnerFn = Callable[[], Owner | None]
# Decayed tokens per tenant that processes used across the cluster (for the fair scheduler).
UsageFn = Callable[[], Mapping[int, float]]
# Orphans claimed per statement: a takeover of thousands of processes goes in several batches.
_CLAIM_BATCH = 100
# States in which a process waits for a person or a budget rather than for a worker.
WAITING_FOR_SOMEONE = frozenset({"waiting_approval", "suspended"})


@dataclass(frozen=True, slots=True)
class Approval:
    """A tool call waiting for a person's yes or no; its id is ``pid:seq`` of the request."""

    id: str
    pid: str
    tenant_id: int
    agent: str
    tool: str
    arguments: Any
    requested_at_us: int


# States whose process waits for its next step in the scheduler.
_RUNNABLE = ("ready", "running")
# States a restart takes up again: a tool call cut off mid-flight runs again with the same key,
# and a sleeper looks again at the process it waits for.
_RESUMED = ("waiting_tool", "sleeping")


class Kernel:
    """Starts, steps, signals and recovers processes."""

    def __init__(
        self,
        runner: Runner,
        processes: ProcessStore,
        agents: AgentStore,
        scheduler: Scheduler | None = None,
        workers: int = 64,
        revive_s: float = 30.0,
        *,
        owner: OwnerFn | None = None,
        claims: ProcessClaims | None = None,
        poll_s: float = 5.0,
        usage: UsageFn | None = None,
        usage_s: float = 2.0,
    ) -> None:
        if workers < 1:
            raise ValueError("a kernel needs at least one worker")
        self._runner = runner
        self._processes = processes
        self._agents = agents
        self._scheduler: Scheduler = scheduler if scheduler is not None else FairScheduler()
        self._workers = workers
        self._busy: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._revive_s = revive_s
        self._reviver: asyncio.Task[None] | None = None
        # Processes a worker is stepping, and those queued again meanwhile (stepped once it ends):
        # one process is never stepped by two workers at once.
        self._stepping: set[str] = set()
        self._again: dict[str, Runnable] = {}
        self._tokens: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._end_listeners: list[EndListener] = []
        # Every process this kernel has queued, is stepping or will step again: the poll for
        # processes resumed elsewhere queues only the others.
        self._held: set[str] = set()
        self._owner: OwnerFn = owner or (lambda: None)
        self._claims = claims
        self._poll_s = poll_s
        self._usage = usage
        self._usage_s = usage_s
        self._loops: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Take up the unfinished processes no live server owns (after a restart: this server's
        earlier epochs' too), where their journals end; then look for more every ``poll_s``."""
        await self._take_up()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="kernel-dispatcher")
        self._reviver = asyncio.create_task(self._revive(), name="kernel-reviver")
        if self._claims is not None:
            self._loops.append(asyncio.create_task(self._poll(), name="kernel-takeover"))
        if self._usage is not None:
            self._loops.append(asyncio.create_task(self._share(), name="kernel-shares"))

    async def close(self) -> None:
        """Stop dispatching and wait for the steps in flight (their processes resume at restart)."""
        for loop in (self._dispatcher, self._reviver, *self._loops):
            if loop is not None:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
        self._dispatcher = self._reviver = None
        self._loops = []
        for task in [*self._busy, *self._retries]:
            task.cancel()
        await asyncio.gather(*self._busy, *self._retries, return_exceptions=True)

    async def spawn(
        self,
        tenant_id: int,
        agent: str,
        input_text: str,
        parent_pid: str | None = None,
        spawn_key: str | None = None,
        origin: str = "api",
        sender: str | None = None,
    ) -> ProcessRecord:
        """Start a process of the newest version of ``agent`` (once per ``spawn_key``).

        A message from another agent (origin ``message``, from ``sender``) starts only an agent
        whose spec has a message trigger that accepts the sender.
        """
        if spawn_key is not None:
            existing = await self._processes.calls(self._processes.spawned, spawn_key)
            if existing is not None:
                return existing
        stored = await self._agents.calls(self._agents.get, tenant_id, agent)
        if origin == "message":
            trigger = stored.spec.message_trigger()
            if trigger is None or not trigger.accepts(sender or ""):
                raise AccountError(
                    403,
                    f"Agent '{agent}' takes no messages from agent '{sender}': "
                    "its spec has no message trigger that accepts it.",
                )
        process = await self._processes.calls(
            self._processes.create,
            tenant_id,
            stored,
            input_text,
            parent_pid,
            spawn_key,
            origin,
            self._owner(),
        )
        self._queue(process)
        return process

    async def signal(self, pid: str, tenant_id: int | None, signal: Signal) -> ProcessRecord:
        """Pause, resume or kill a process; 409 when the signal does not apply to its state."""
        process = await self._processes.calls(self._processes.get, pid, tenant_id)
        if signal == "resume":
            resumed = await self._processes.calls(
                self._processes.set_state, pid, "running", expect={"suspended"}
            )
            await self._adopt(resumed)
            return resumed
        self._withdraw(pid)
        if signal == "kill":
            killed = await self._processes.calls(
                self._processes.set_state, pid, "killed", reason="killed by a signal"
            )
            # A killed process's children die with it; a parent waiting on it wakes.
            for child in await self._processes.calls(self._processes.children, pid):
                if not child.finished:
                    with contextlib.suppress(AccountError):
                        await self.signal(child.pid, None, "kill")
            await self._ended(killed)
            return killed
        paused = "paused by a signal"
        if process.state == "suspended":
            raise AccountError(409, f"Process {pid} is already suspended.")
        suspended = await self._processes.calls(self._processes.set_state, pid, "suspended", reason=paused)
        self._settled(suspended)
        return suspended

    async def approvals(self, tenant_id: int | None) -> list[Approval]:
        """The calls waiting for a decision: one inbox across a tenant's agents (all, for None)."""
        waiting = await self._processes.calls(self._processes.find, tenant_id, ("waiting_approval",), 1000)
        inbox: list[Approval] = []
        for process in waiting:
            steps = await self._processes.calls(self._processes.journal, process.pid)
            decided = {
                s.payload["id"] for s in steps if s.kind == "approval" and s.payload["status"] != "pending"
            }
            inbox += [
                Approval(
                    f"{process.pid}:{s.seq}",
                    process.pid,
                    process.tenant_id,
                    process.agent,
                    s.payload["tool"],
                    s.payload.get("arguments"),
                    s.created_at_us,
                )
                for s in steps
                if s.kind == "approval"
                and s.payload["status"] == "pending"
                and s.payload["id"] not in decided
            ]
        return sorted(inbox, key=lambda a: a.requested_at_us)

    async def decide(self, approval_id: str, tenant_id: int | None, approve: bool) -> ProcessRecord:
        """Approve or deny a waiting call; the process runs on (404 unknown, 409 already decided)."""
        pid, _, seq = approval_id.rpartition(":")
        if not pid or not seq.isdigit():
            raise AccountError(404, f"No approval {approval_id}.")
        try:
            process = await self._processes.calls(self._processes.get, pid, tenant_id)
        except AccountError as exc:
            raise AccountError(404, f"No approval {approval_id}.") from exc
        steps = await self._processes.calls(self._processes.journal, pid)
        request = next((s for s in steps if s.seq == int(seq) and s.kind == "approval"), None)
        if request is None or request.payload["status"] != "pending":
            raise AccountError(404, f"No approval {approval_id}.")
        call_id = request.payload["id"]
        if any(s.kind == "approval" and s.payload["id"] == call_id and s.seq > request.seq for s in steps):
            raise AccountError(409, f"Approval {approval_id} was already decided.")
        if process.state != "waiting_approval":
            raise AccountError(409, f"Process {pid} is {process.state}, not waiting for an approval.")
        decision = {
            "id": call_id,
            "tool": request.payload["tool"],
            "status": "approved" if approve else "denied",
        }
        await self._processes.calls(self._processes.append, pid, "approval", decision)
        running = await self._processes.calls(
            self._processes.set_state, pid, "running", expect={"waiting_approval"}
        )
        await self._adopt(running)
        return running

    def add_end_listener(self, listener: EndListener) -> None:
        """Have ``listener`` told of every process that ends (the inbox reports results this way)."""
        self._end_listeners.append(listener)

    async def wait(self, pid: str, timeout_s: float) -> ProcessRecord:
        """The process once it has ended or waits for a person or a budget; as it is after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            record = await self._processes.calls(self._processes.get, pid)
            left = deadline - loop.time()
            if record.finished or record.state in WAITING_FOR_SOMEONE or left <= 0:
                return record
            settled = loop.create_future()
            self._waiters.setdefault(pid, []).append(settled)
            try:
                # Woken by this kernel's workers; the database is read again at least every
                # second, for a change made elsewhere (another server, a person's signal).
                await asyncio.wait_for(settled, min(left, 1.0))
            except TimeoutError:
                pass
            finally:
                waiting = self._waiters.get(pid, [])
                if settled in waiting:
                    waiting.remove(settled)
                if not waiting:
                    self._waiters.pop(pid, None)

    def _settled(self, process: ProcessRecord) -> None:
        """A process stopped running (ended, or waits): wake whoever waits on it."""
        for waiter in self._waiters.pop(process.pid, []):
            if not waiter.done():
                waiter.set_result(None)

    def _mine(self, process: ProcessRecord) -> bool:
        """Whether this server owns the process (outside a cluster, it owns everything)."""
        me = self._owner()
        return me is None or (process.owner_node_id, process.owner_epoch) == (me.node_id, me.epoch)

    async def _adopt(self, process: ProcessRecord) -> None:
        """Queue a process made runnable here (a resume, a decision, a child that ended).

        Its owner steps it: this server if it is the owner, or if the owner holds no live lease
        (claimed by compare-and-set); a live owner elsewhere finds it at its next poll.
        """
        if self._mine(process):
            self._queue(process)
            return
        me = self._owner()
        if me is not None and self._claims is not None:
            claimed = await self._processes.calls(self._claims.claim_one, process.pid, me)
            if claimed is not None:
                await self._take(claimed)

    def _withdraw(self, pid: str) -> None:
        """A queued process leaves the queue (paused, killed)."""
        self._scheduler.remove(pid)
        if pid not in self._stepping:
            self._held.discard(pid)
            self._again.pop(pid, None)

    async def _take(self, process: ProcessRecord) -> None:
        """Go on with a process this server has just come to own, where its journal ends."""
        if process.state in _RESUMED:
            await self._resume(process.pid, set(_RESUMED))
        elif process.state in _RUNNABLE:
            self._queue(process)

    async def _take_up(self) -> None:
        """Claim every orphan (in batches) and go on with it; outside a cluster, every unfinished process."""
        me = self._owner()
        if me is None or self._claims is None:
            for process in await self._processes.calls(self._processes.unfinished):
                await self._take(process)
            return
        while True:
            batch = await self._processes.calls(self._claims.claim, me, _CLAIM_BATCH)
            for process in batch:
                await self._take(process)
            if batch:
                logger.info("took up %d process(es) whose owner holds no lease", len(batch))
            if len(batch) < _CLAIM_BATCH:
                return

    async def _poll(self) -> None:
        # Orphans (a peer died, or this server's previous epoch) and this server's own processes
        # made runnable elsewhere (a resume or a decision sent to another server).
        assert self._claims is not None
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self._take_up()
                me = self._owner()
                if me is None:
                    continue
                for process in await self._processes.calls(self._claims.owned, me, _RUNNABLE):
                    if process.pid not in self._held:
                        self._queue(process)
            except Exception:  # the database is away: the next poll tries again
                logger.warning("looking for processes to take up failed", exc_info=True)

    async def _share(self) -> None:
        # What tenants used across the cluster, so that shares hold when several servers step.
        assert self._usage is not None
        while True:
            try:
                used = await asyncio.to_thread(self._usage)
                observe = getattr(self._scheduler, "observe", None)
                if observe is not None:
                    observe(used, time.monotonic())
            except Exception:
                logger.warning("reading the tenants' usage across the cluster failed", exc_info=True)
            await asyncio.sleep(self._usage_s)

    def _queue(self, process: ProcessRecord) -> None:
        # What the process had used when queued: its next step's tokens are the difference.
        self._held.add(process.pid)
        self._tokens[process.pid] = process.prompt_tokens + process.completion_tokens
        runnable = Runnable(process.pid, process.tenant_id, process.priority, time.monotonic())
        if process.pid in self._stepping:
            self._again[process.pid] = runnable
            return
        self._scheduler.add(runnable)
        self._wake.set()

    def _step_again_later(self, pid: str) -> None:
        """Queue the process again once the database answers (it stays held meanwhile)."""
        retry = asyncio.create_task(self._when_reachable(pid), name=f"step-again:{pid}")
        self._retries.add(retry)
        retry.add_done_callback(self._retries.discard)

    async def _when_reachable(self, pid: str) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                process = await self._processes.aget(pid)
                break
            except Exception as exc:
                if not unreachable(exc):
                    logger.warning("process %s: reading it to step it again failed: %s", pid, exc)
                    self._held.discard(pid)
                    return
        self._held.discard(pid)
        if process.state in _RUNNABLE and process.pid not in self._stepping:
            await self._adopt(process)

    async def _resume(self, pid: str, states: set[str]) -> None:
        """Move a process from one of ``states`` to running and queue it, unless it moved on.

        Not checked for an owner: the process waits (nobody steps it), and its owner steps it on.
        """
        try:
            woken = await self._processes.calls(self._processes.set_state, pid, "running", expect=states)
        except AccountError:
            return
        await self._adopt(woken)

    async def _ended(self, process: ProcessRecord) -> None:
        """A process ended: a parent sleeping on it wakes to read its answer; listeners hear of it."""
        self._settled(process)
        if process.parent_pid is not None:
            await self._resume(process.parent_pid, {"sleeping"})
        for listener in self._end_listeners:
            try:
                await listener(process)
            except Exception:  # a listener's trouble is its own; the kernel goes on
                logger.exception("an end listener failed for process %s", process.pid)

    async def _revive(self) -> None:
        # A budget that allowed nothing may allow again (a new day, a raised limit): processes
        # suspended for their budget are tried again now and then, and suspend again if still over.
        while True:
            await asyncio.sleep(self._revive_s)
            me = self._owner()
            if me is not None and self._claims is not None:  # a peer revives its own
                waiting = await self._processes.calls(self._claims.owned, me, ("suspended", "sleeping"))
            else:
                waiting = await self._processes.calls(
                    self._processes.find, None, ("suspended", "sleeping"), 1000
                )
            for process in waiting:
                if process.state == "sleeping":
                    await self._wake_sleeper(process)
                    continue
                if not (process.reason or "").startswith(BUDGET_REASON):
                    continue
                try:
                    revived = await self._processes.calls(
                        self._processes.set_state, process.pid, "running", expect={"suspended"}
                    )
                except AccountError as exc:  # signalled meanwhile
                    logger.info("reviving: %s", exc.message)
                    continue
                await self._adopt(revived)

    async def _wake_sleeper(self, process: ProcessRecord) -> None:
        # A parent whose child ended while no kernel ran (a crash between the two) is woken here.
        awaited = (process.reason or "").removeprefix(SLEEP_REASON)
        try:
            ended = (await self._processes.calls(self._processes.get, awaited)).finished
        except AccountError:
            ended = True
        if ended:
            await self._resume(process.pid, {"sleeping"})

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self._busy) < self._workers:
                chosen = self._scheduler.next(time.monotonic())
                if chosen is None:
                    break
                # Marked before the task runs: a poll in between must not queue it a second time.
                self._stepping.add(chosen.pid)
                task = asyncio.create_task(self._work(chosen), name=f"step:{chosen.pid}")
                self._busy.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        # The worker's place is free only once its task is done: wake the dispatcher then.
        self._busy.discard(task)
        self._wake.set()

    async def _work(self, chosen: Runnable) -> None:
        tokens, retrying = 0, False
        self._stepping.add(chosen.pid)
        before = self._tokens.pop(chosen.pid, None)
        owner = self._owner()  # the step writes as the owner it began under
        try:
            after = await self._runner.step(chosen.pid, owner)
            used = after.prompt_tokens + after.completion_tokens
            tokens = 0 if before is None else used - before
            if after.state == "running" and self._mine(after):
                self._queue(after)
            elif after.finished:
                await self._ended(after)
            else:
                self._settled(after)
        except NotOwner as exc:  # another server took it up (this epoch's lease ended): it steps on there
            logger.warning("process %s: a step's write was refused: %s", chosen.pid, exc.message)
        except AccountError as exc:  # the process ended or was signalled while it stepped
            logger.info("process %s: %s", chosen.pid, exc.message)
        except Exception as exc:
            if unreachable(exc):
                # Whether the step's write committed is unknown: the process stays as the database
                # has it, and steps on from its journal once the database answers again.
                logger.warning("process %s: the database did not answer a step: %s", chosen.pid, exc)
                retrying = True
                self._step_again_later(chosen.pid)
                return
            logger.exception("process %s failed a step", chosen.pid)
            reason = f"a step failed: {type(exc).__name__}: {exc}"
            with contextlib.suppress(AccountError):
                failed = await self._processes.calls(
                    self._processes.set_state, chosen.pid, "failed", reason=reason, owner=owner
                )
                await self._ended(failed)
        finally:
            self._stepping.discard(chosen.pid)
            self._scheduler.done(chosen, tokens, time.monotonic())
            again = self._again.pop(chosen.pid, None)
            if again is not None:
                self._scheduler.add(again)
                self._wake.set()
            elif not retrying:  # a process stepped again later stays held meanwhile
                self._held.discard(chosen.pid)
