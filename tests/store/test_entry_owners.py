"""Owners of entries and inbox deliveries, on SQLite and a real PostgreSQL: exactly one server
claims what a stopped server left open, and a fenced owner writes nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from sqlalchemy import Engine

from aigrid.store.accounts import AccountStore
from aigrid.store.cluster import ClusterStore, Fenced, Owner
from aigrid.store.entries import EntryRecord, EntryStore
from aigrid.store.inbox import InboxStore

T = TypeVar("T")


@pytest.fixture(autouse=True)
def tenant(engine: Engine) -> None:
    """The tenant (id 1) whose entries the tests make."""
    AccountStore(engine).ensure_tenant("t")


def _left_by_dead(store: EntryStore, nodes: ClusterStore, name: str, *states: str) -> list[EntryRecord]:
    """Entries a node began in these states before its lease ended."""
    owner = nodes.register(name, 30, None, {})
    made = [_running(store, owner, state) for state in states]
    nodes.leave(owner)
    return made


def _running(store: EntryStore, owner: Owner | None, state: str = "running") -> EntryRecord:
    entry = store.create(1, "alice", "buy a kettle", owner)
    summary = {"purchases": [], "text": "nothing"}
    if state == "planning":
        return entry
    moved = store.move(entry.id, ["planning"], "awaiting_confirmation", summary=summary, owner=owner)
    assert moved is not None
    if state == "awaiting_confirmation":
        return moved
    running = store.move(entry.id, ["awaiting_confirmation"], "running", take=owner)
    assert running is not None
    return running


def _race(claimers: list[Callable[[], list[T]]]) -> list[list[T]]:
    """Run each claimer until it claims nothing more, all at once; what each claimed."""
    got: list[list[T]] = [[] for _ in claimers]
    start = threading.Barrier(len(claimers))

    def run(n: int) -> None:
        start.wait()
        while batch := claimers[n]():
            got[n].extend(batch)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(claimers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_recovery_claims_a_dead_owners_entries_and_never_a_live_peers(engine: Engine) -> None:
    nodes, store = ClusterStore(engine), EntryStore(engine)
    peer = nodes.register("peer", 30, None, {})
    dead_planning, waiting = _left_by_dead(store, nodes, "dead", "planning", "awaiting_confirmation")
    me_before = nodes.register("me", 30, None, {})
    peers = _running(store, peer)
    mine = _running(store, me_before, "running")
    no_owner = _running(store, None)
    me = nodes.register("me", 30, None, {})  # a restart: the earlier epoch is not live any more
    claimed = {e.id: e for e in store.claim(me)}
    assert set(claimed) == {dead_planning.id, mine.id, no_owner.id}
    assert all(e.owner == me for e in claimed.values())
    assert peers.id not in claimed, "a live peer's saga is its own"
    assert waiting.id not in claimed, "an entry waiting for its user is no one's work"
    assert store.claim(me) == [], "claimed once"
    nodes.leave(peer)
    (taken,) = store.claim(me)
    assert taken.id == peers.id and store.get(peers.id).owner == me


def test_two_claimers_never_get_the_same_entry(engine: Engine) -> None:
    nodes, store = ClusterStore(engine), EntryStore(engine)
    made = {e.id for e in _left_by_dead(store, nodes, "dead", *["running"] * 30)}
    a, b = nodes.register("a", 30, None, {}), nodes.register("b", 30, None, {})
    got_a, got_b = _race([lambda: store.claim(a, limit=3), lambda: store.claim(b, limit=3)])
    ids_a, ids_b = {e.id for e in got_a}, {e.id for e in got_b}
    assert len(ids_a) == len(got_a) and len(ids_b) == len(got_b)
    assert not ids_a & ids_b and ids_a | ids_b == made
    for entry in got_a:
        assert store.get(entry.id).owner == a


def test_a_fenced_owner_writes_nothing(engine: Engine) -> None:
    nodes, store = ClusterStore(engine), EntryStore(engine)
    zombie = nodes.register("zombie", 0.3, None, {})
    entry = _running(store, zombie)
    store.append(entry.id, "intent", {"action": "authorise:0"}, zombie)
    time.sleep(0.5)  # paused past its lease
    with pytest.raises(Fenced):
        store.append(entry.id, "result", {"action": "authorise:0", "value": {}}, zombie)
    assert store.move(entry.id, ["running"], "done", answer="done", owner=zombie) is None
    # It rejoins with a new epoch; a peer claims the entry; the old epoch still writes nothing.
    woke = nodes.reregister(zombie, 30, {})
    assert woke is not None
    peer = nodes.register("peer", 30, None, {})
    (claimed,) = store.claim(peer)
    assert claimed.id == entry.id
    for old in (zombie, woke):  # the new epoch did not claim it: it is not its either
        with pytest.raises(Fenced):
            store.append(entry.id, "note", {"reason": "late"}, old)
        assert store.move(entry.id, ["running"], "compensating", owner=old) is None
    assert [s.kind for s in store.journal(entry.id)] == ["intent"]
    assert store.get(entry.id).state == "running"
    # The claimer's writes go through.
    store.append(entry.id, "result", {"action": "authorise:0", "value": {}}, peer)
    assert store.move(entry.id, ["running"], "done", answer="done", owner=peer) is not None


def test_a_fenced_server_claims_nothing_and_cannot_confirm(engine: Engine) -> None:
    nodes, store = ClusterStore(engine), EntryStore(engine)
    (orphan,) = _left_by_dead(store, nodes, "dead", "running")
    waiting = _running(store, nodes.register("live", 30, None, {}), "awaiting_confirmation")
    zombie = nodes.register("zombie", 0.2, None, {})
    time.sleep(0.4)
    with pytest.raises(Fenced):
        store.claim(zombie)
    with pytest.raises(Fenced):
        store.create(1, "alice", "buy a kettle", zombie)
    assert store.move(waiting.id, ["awaiting_confirmation"], "running", take=zombie) is None
    assert store.get(orphan.id).owner != zombie and store.get(waiting.id).state == "awaiting_confirmation"


def test_two_claimers_never_get_the_same_delivery_and_a_dead_ones_are_taken_over(engine: Engine) -> None:
    nodes, inbox = ClusterStore(engine), InboxStore(engine)
    posted = {inbox.post(1, f"message {n}", webhook="http://hook") for n in range(30)}
    inbox.post(1, "no webhook")
    a, b = nodes.register("a", 30, None, {}), nodes.register("b", 30, None, {})
    now = time.time_ns() // 1000 + 1

    def deliver(owner: Owner) -> list[int]:
        """Claim a few due deliveries and record each sent, as a server's delivery round does."""
        sent = [m.id for m in inbox.claim_due(owner, now, 4)]
        assert all(inbox.delivered(m, owner) for m in sent)
        return sent

    got_a, got_b = _race([lambda: deliver(a), lambda: deliver(b)])
    assert len(set(got_a)) == len(got_a) and len(set(got_b)) == len(got_b)
    assert not set(got_a) & set(got_b) and set(got_a) | set(got_b) == posted, "each sent once"
    # b dies with claims it never delivered: a live a takes them over; b's late records are refused.
    more = {inbox.post(1, f"later {n}", webhook="http://hook") for n in range(3)}
    now = time.time_ns() // 1000 + 1
    ids_b = {m.id for m in inbox.claim_due(b, now)}
    assert ids_b == more and inbox.claim_due(a, now) == [], "b is live and trying them"
    nodes.leave(b)
    taken = {m.id for m in inbox.claim_due(a, now)}
    assert taken == ids_b
    late = next(iter(ids_b))
    assert not inbox.delivered(late, b), "b's claim was taken over"
    assert inbox.delivered(late, a)
    assert not inbox.delivered(late, a), "delivered once; the claim is let go"
    assert late not in {m.id for m in inbox.claim_due(a, now)}, "a delivered message is not sent again"
    delivered = {m.id: m for m in inbox.messages(1)}[late]
    assert delivered.delivered_at_us is not None and delivered.attempts == 1 and delivered.owner is None


def test_a_failed_delivery_is_let_go_for_any_server_to_retry(engine: Engine) -> None:
    nodes, inbox = ClusterStore(engine), InboxStore(engine)
    message = inbox.post(1, "hello", webhook="http://hook")
    a, b = nodes.register("a", 30, None, {}), nodes.register("b", 30, None, {})
    now = time.time_ns() // 1000 + 1
    assert [m.id for m in inbox.claim_due(a, now)] == [message]
    assert inbox.claim_due(b, now) == [], "a live server is trying it"
    assert inbox.failed(message, "HTTP 500", now, a)
    assert [m.id for m in inbox.claim_due(b, now)] == [message]


def test_a_process_result_is_kept_once(engine: Engine) -> None:
    inbox = InboxStore(engine)
    first = inbox.post(1, "all quiet", kind="result", pid="p-1", webhook="http://hook")
    assert inbox.post(1, "all quiet", kind="result", pid="p-1", webhook="http://hook") == first
    inbox.post(1, "a note", pid="p-1")
    inbox.post(1, "another note", pid="p-1")
    assert [m.kind for m in inbox.messages(1)] == ["result", "note", "note"]


def test_a_claim_a_live_server_never_let_go_runs_out(engine: Engine) -> None:
    nodes, inbox = ClusterStore(engine), InboxStore(engine)
    message = inbox.post(1, "hello", webhook="http://hook")
    a, b = nodes.register("a", 30, None, {}), nodes.register("b", 30, None, {})
    now = time.time_ns() // 1000 + 1
    assert [m.id for m in inbox.claim_due(a, now, claim_s=0.3)] == [message]
    assert inbox.claim_due(a, now) == [], "not claimed twice, even by its own claimer"
    time.sleep(0.5)  # a's round failed before it let the claim go
    assert [m.id for m in inbox.claim_due(b, now)] == [message]
    assert not inbox.failed(message, "HTTP 500", None, a)
