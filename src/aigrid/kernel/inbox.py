"""What reaches an agent's owner: its notes and the results of processes nobody sat waiting for.

Everything goes to the tenant's inbox (``/v1/inbox``, ``aigrid inbox``); when the agent's spec
names a ``webhook``, the message is also POSTed there as JSON, and tried again with growing pauses
until the webhook answers 2xx (at most ``MAX_DELIVERY_ATTEMPTS`` tries). A result missed because
the server stopped between a process's end and its message is found and posted at the next start
(and, in a cluster, by a live server's sweep every ``sweep_s``; a result is kept once).

In a cluster each server claims the deliveries it tries (``InboxStore.claim_due``), so a delivery
is sent by one server at a time and a dead server's are taken over. Each POST carries an
``Idempotency-Key`` (the message's): a server that dies between sending and recording leaves the
delivery to be sent again, and the key lets the webhook see it is the same message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from aigrid.clock import now_us
from aigrid.store.agents import AgentStore
from aigrid.store.cluster import Fenced, Owner
from aigrid.store.inbox import MAX_DELIVERY_ATTEMPTS, InboxMessage, InboxStore
from aigrid.store.processes import ProcessRecord, ProcessStore

logger = logging.getLogger(__name__)

# Processes started by no one waiting for the answer: their result goes to the owner's inbox.
UNATTENDED = ("trigger", "webhook", "message")
_DELIVERY_TIMEOUT_S = 10.0
_LONGEST_PAUSE_S = 3600
# How far back the start-up sweep looks for results that never reached the inbox.
_SWEEP_BACK_US = 7 * 86_400 * 1_000_000


class Inbox:
    """Posts notes and results to the owner's inbox and delivers them to webhooks."""

    def __init__(
        self,
        store: InboxStore,
        agents: AgentStore,
        processes: ProcessStore,
        client: httpx.AsyncClient | None = None,
        every_s: float = 1.0,
        owner: Callable[[], Owner | None] = lambda: None,
        sweep_s: float | None = None,
    ) -> None:
        self._store = store
        self._agents = agents
        self._processes = processes
        self._client = client or httpx.AsyncClient(timeout=_DELIVERY_TIMEOUT_S)
        self._every_s = every_s
        self._owner = owner  # this server's node and epoch now; None outside a cluster
        self._sweep_s = sweep_s  # how often to look for results a dead server never posted
        self._swept = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()

    async def start(self) -> None:
        """Post the results a stopped server missed, then deliver to webhooks in the background."""
        await self.sweep()
        self._task = asyncio.create_task(self._deliver_forever(), name="inbox-delivery")

    async def aclose(self) -> None:
        """Stop delivering (what is left is tried at the next start)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._client.aclose()

    async def note(self, process: ProcessRecord, text: str) -> int:
        """A note a process leaves for its owner; its message id."""
        webhook = await self._webhook(process)
        return await asyncio.to_thread(
            self._store.post, process.tenant_id, text, pid=process.pid, agent=process.agent, webhook=webhook
        )

    async def result(self, process: ProcessRecord) -> None:
        """Post an unattended process's outcome, once it has ended (an end listener of the kernel)."""
        if process.origin not in UNATTENDED or not process.finished:
            return
        text = process.result if process.state == "done" else f"{process.state}: {process.reason or ''}"
        webhook = await self._webhook(process)
        await asyncio.to_thread(
            self._store.post,
            process.tenant_id,
            text or "(no answer)",
            kind="result",
            pid=process.pid,
            agent=process.agent,
            webhook=webhook,
        )
        self.wake()

    async def sweep(self) -> int:
        """Post the results of ended unattended processes that never reached the inbox; how many.

        Any server may post one (a dead peer's, say): the inbox keeps a process's result once.
        """
        self._swept = time.monotonic()
        since = now_us() - _SWEEP_BACK_US
        pids = await asyncio.to_thread(self._store.unreported, UNATTENDED, since)
        for pid in pids:
            await self.result(await asyncio.to_thread(self._processes.get, pid))
        return len(pids)

    def wake(self) -> None:
        """Deliver due messages now rather than at the next round."""
        self._poke.set()

    async def deliver_due(self) -> int:
        """Try every message whose delivery is due; how many the webhooks took."""
        owner = self._owner()
        if owner is None:  # alone: every due delivery is this server's
            due = await asyncio.to_thread(self._store.due, now_us())
        else:
            try:
                due = await asyncio.to_thread(self._store.claim_due, owner, now_us())
            except Fenced:
                return 0  # not live: a live peer delivers instead
        taken = 0
        for message in due:
            taken += await self._deliver(message, owner)
        return taken

    async def _webhook(self, process: ProcessRecord) -> str | None:
        stored = await self._agents.calls(
            self._agents.get, process.tenant_id, process.agent, process.agent_version
        )
        return stored.spec.webhook

    async def _deliver(self, message: InboxMessage, owner: Owner | None) -> int:
        if message.webhook is None:
            return 0
        payload: dict[str, Any] = {
            "object": "inbox.message",
            "id": message.id,
            "kind": message.kind,
            "agent": message.agent,
            "pid": message.pid,
            "text": message.text,
            "created_at": message.created_at_us // 1_000_000,
        }
        try:
            headers = {"Idempotency-Key": f"inbox-{message.id}"}
            response = await self._client.post(message.webhook, json=payload, headers=headers)
            if response.is_success:
                if not await asyncio.to_thread(self._store.delivered, message.id, owner):
                    logger.warning(
                        "inbox message %d was delivered after its claim was taken over", message.id
                    )
                return 1
            error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        tries = message.attempts + 1
        retry = None
        if tries < MAX_DELIVERY_ATTEMPTS:
            retry = now_us() + min(2**tries, _LONGEST_PAUSE_S) * 1_000_000
        await asyncio.to_thread(self._store.failed, message.id, error, retry, owner)
        return 0

    async def _deliver_forever(self) -> None:
        while True:
            try:
                if self._sweep_s is not None and time.monotonic() - self._swept >= self._sweep_s:
                    await self.sweep()
                await self.deliver_due()
            except Exception:  # the database away for a moment: the next round tries again
                logger.exception("inbox delivery failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self._every_s)
            self._poke.clear()
