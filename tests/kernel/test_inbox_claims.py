"""Two servers' inboxes on one database: each webhook delivery is sent by one of them, once, with
its idempotency key; a dead server's unfinished deliveries are taken over."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from tests.kernel.doubles import KernelDB

from aigrid.kernel.inbox import Inbox
from aigrid.store.cluster import ClusterStore, Owner

pytestmark = pytest.mark.asyncio


class Hook:
    """A webhook that records what it was sent, taking a moment to answer."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)
        self.keys.append(request.headers["Idempotency-Key"])
        return httpx.Response(200)


def _inbox(db: KernelDB, hook: Hook, owner: Owner) -> Inbox:
    client = httpx.AsyncClient(transport=httpx.MockTransport(hook))
    return Inbox(db.messages, db.agents, db.processes, client, owner=lambda: owner)


async def test_two_servers_send_each_delivery_once(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    nodes = ClusterStore(db.messages._engine)
    hook = Hook()
    posted = [db.messages.post(db.tenant, f"note {n}", webhook="http://hook/in") for n in range(20)]
    a = _inbox(db, hook, nodes.register("a", 30, None, {}))
    b = _inbox(db, hook, nodes.register("b", 30, None, {}))
    sent = await asyncio.gather(a.deliver_due(), b.deliver_due(), a.deliver_due(), b.deliver_due())
    assert sum(sent) == len(posted)
    assert sorted(hook.keys) == sorted(f"inbox-{m}" for m in posted), "each sent once, with its key"
    assert all(m.delivered_at_us is not None for m in db.messages.messages(db.tenant))
    await a.aclose()
    await b.aclose()


async def test_a_dead_servers_claimed_deliveries_are_taken_over(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    nodes = ClusterStore(db.messages._engine)
    message = db.messages.post(db.tenant, "hello", webhook="http://hook/in")
    dead = nodes.register("dead", 30, None, {})
    (claimed,) = db.messages.claim_due(dead, 2**62)  # it claimed the delivery, then died
    hook = Hook()
    live = _inbox(db, hook, nodes.register("live", 30, None, {}))
    assert await live.deliver_due() == 0, "the claimer is live: its delivery is its own"
    nodes.leave(dead)
    assert await live.deliver_due() == 1
    assert hook.keys == [f"inbox-{message}"] and claimed.id == message
    assert not db.messages.delivered(message, dead), "the dead server's late record is refused"
    await live.aclose()
