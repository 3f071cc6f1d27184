"""The fault part of ``bench/entry.py``: sagas killed with SIGKILL at random points, and their recovery.

A few entries are first sent without a kill to place the kill window (``calibrate``, ``kill_plan``);
then each plan of ``entry_plans`` is sent with ``confirm: true``, the server is killed after a random
delay, where the kill landed is read from a copy of its database (``kill_point``), and the server is
started again and must carry every open saga to its end with the money adding up (``run_fault``).
``print_fault`` prints a line per run and ``report_faults`` the summary.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from entry_plans import FaultPlan, Piece, next_plan
from entry_state import State, invariant, new_since
from entry_world import TASK_WAIT_S, BenchError, Rig, ask, open_entries, settle, short

RECOVERY_S = 60.0
CALIBRATION_RUNS = 5
WINDOW_FACTOR = 1.5


# -- where a kill landed ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """A saga journal read: how many steps, calls begun, answered, refused, in flight, repeated."""

    steps: int = 0
    intents: int = 0
    answered: int = 0
    in_flight: int = 0
    repeated: int = 0  # calls whose intent is journaled more than once (made again after a restart)
    redone: int = 0  # calls made again although the journal already held their answer
    conflicting: int = 0  # calls answered twice with different results
    undone: int = 0  # compensating calls made


def journal_facts(steps: list[tuple[str, dict[str, Any]]]) -> Facts:
    intents: Counter[str] = Counter()
    outcomes: dict[str, list[Any]] = {}
    redone = 0
    for kind, payload in steps:
        action = str(payload.get("action", ""))
        if kind == "intent":
            intents[action] += 1
            redone += action in outcomes
        elif kind in ("result", "refused"):
            outcomes.setdefault(action, []).append(payload.get("value", payload.get("error")))
    return Facts(
        steps=len(steps),
        intents=sum(intents.values()),
        answered=sum(len(v) for v in outcomes.values()),
        in_flight=sum(1 for a in intents if a not in outcomes),
        repeated=sum(1 for n in intents.values() if n > 1),
        redone=redone,
        conflicting=sum(1 for v in outcomes.values() if any(x != v[0] for x in v)),
        undone=sum(1 for a in intents if a.startswith("undo:")),
    )


@dataclass(frozen=True)
class KillPoint:
    entry_id: str | None
    state: str | None
    facts: Facts

    @property
    def landed(self) -> str:
        if self.state is None:
            return "before the entry"
        if self.state in ("running", "compensating"):
            return "mid-saga" if self.facts.intents else "saga, no call yet"
        return "after the end" if self.state in ("done", "failed") else self.state


def kill_point(data_dir: Path, text: str, scratch: Path) -> KillPoint:
    """The entry and its journal as the killed server left them in its database.

    Read from a copy of the database and its WAL, taken after the SIGKILL and before the restart: it
    holds exactly what the server had committed when it died (it journals each call's intent before
    making it and its outcome when it answers, each in its own transaction), so it says which state
    the entry was in and which calls were in flight. The API cannot say it: a GET just before the kill
    races with the saga, and after the restart the journal shows only seconds, not which steps came
    before the kill.
    """
    copy = scratch / "at-kill"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(parents=True)
    for suffix in ("", "-wal"):
        source = data_dir / f"aigrid.db{suffix}"
        if source.exists():
            shutil.copy2(source, copy / source.name)
    db = sqlite3.connect(copy / "aigrid.db")
    try:
        row = db.execute("SELECT id, state FROM entries WHERE input = ?", (text,)).fetchone()
        if row is None:
            return KillPoint(None, None, Facts())
        rows = db.execute(
            "SELECT kind, payload FROM entry_journal WHERE entry_id = ? ORDER BY seq", (row[0],)
        )
        steps = [(str(kind), dict(json.loads(payload))) for kind, payload in rows]
    finally:
        db.close()
    return KillPoint(str(row[0]), str(row[1]), journal_facts(steps))


# -- one killed saga --------------------------------------------------------------------------------


@dataclass
class Pending:
    """A POST /v1/entry running in a thread, which the kill usually cuts off."""

    answer: dict[str, Any] | None = None
    error: str | None = None
    thread: threading.Thread | None = None


def post_in_background(rig: Rig, body: dict[str, Any]) -> Pending:
    pending = Pending()

    def work() -> None:
        try:
            with rig.client(timeout=TASK_WAIT_S + 60) as client:
                pending.answer = ask(client, body)
        except (httpx.HTTPError, BenchError) as exc:
            pending.error = f"{type(exc).__name__}: {exc}"

    pending.thread = threading.Thread(target=work, daemon=True)
    pending.thread.start()
    return pending


@dataclass(frozen=True)
class Kill:
    """When the server is killed: ``delay_s`` after sending the POST, or after the saga began."""

    anchor: str  # "send" or "saga"
    delay_s: float

    def __str__(self) -> str:
        return f"{self.anchor} + {1000 * self.delay_s:3.0f} ms"


def wait_saga(data_dir: Path, text: str, timeout: float = 10.0) -> bool:
    """Poll the live server's database (read-only, every millisecond) until the entry leaves planning.

    The saga moves the entry out of planning just before its first call, so this is when it begins.
    """
    deadline = time.monotonic() + timeout
    db = sqlite3.connect(f"file:{data_dir / 'aigrid.db'}?mode=ro", uri=True)
    try:
        while time.monotonic() < deadline:
            row = db.execute("SELECT state FROM entries WHERE input = ?", (text,)).fetchone()
            if row is not None and row[0] != "planning":
                return True
            time.sleep(0.001)
    finally:
        db.close()
    return False


@dataclass(frozen=True)
class FaultResult:
    plan: FaultPlan
    kill: Kill
    at_kill: KillPoint
    final_state: str  # the entry's state after recovery, "none" if there is no entry
    final: Facts
    answer: str
    expected: str
    world: str | None  # what in the services does not match the entry's outcome
    violations: list[str]
    left_open: int
    restart_s: float
    recovery_s: float


def wait_recovered(rig: Rig) -> tuple[int, float]:
    """Entries still open after RECOVERY_S, and how long recovery took to leave none."""
    began = time.monotonic()
    with rig.client() as client:
        while True:
            left = open_entries(client)
            if not left or time.monotonic() - began > RECOVERY_S:
                return len(left), time.monotonic() - began
            time.sleep(0.25)


def expected_state(plan: FaultPlan, at_kill: KillPoint) -> str:
    if at_kill.state in (None, "planning"):
        return "nothing done"
    return "failed" if plan.piece.must_fail else "done"


def world_problem(entry: dict[str, Any] | None, before: State, after: State) -> str | None:
    """Whether the services show what the entry's end says: its purchases bought and paid, or nothing."""
    changes = new_since(before, after)
    if changes.vanished:
        return f"{len(changes.vanished)} earlier order(s) or booking(s) cancelled"
    if entry is None or entry["state"] != "done":
        if changes.created or before.wallets != after.wallets:
            ended = entry["state"] if entry else "with no entry"
            return f"ended {ended}, yet {len(changes.created)} new live order(s), money moved"
        return None
    purchases = (entry.get("summary") or {}).get("purchases", [])
    if len(changes.created) != len(purchases):
        return f"done with {len(purchases)} purchase(s), but {len(changes.created)} live"
    user = entry["user"]
    spent = before.wallets[user].balance_cents - after.wallets[user].balance_cents
    owed = sum(int(p.get("amount_cents") or 0) for p in purchases)
    return None if spent == owed else f"done for {owed} cents, but {user} paid {spent}"


def entry_after(rig: Rig, entry_id: str | None) -> dict[str, Any] | None:
    if entry_id is None:
        return None
    with rig.client() as client:
        found = client.get(f"/v1/entry/{entry_id}")
        found.raise_for_status()
        return dict(found.json())


def run_fault(
    rig: Rig, plan: FaultPlan, kill: Kill, before: State, seed: dict[str, int]
) -> tuple[FaultResult, State]:
    pending = post_in_background(rig, plan.body())
    if kill.anchor == "saga":
        wait_saga(rig.data_dir, plan.input)
    time.sleep(kill.delay_s)
    rig.server.kill()
    if pending.thread is not None:
        pending.thread.join(timeout=30)
    at_kill = kill_point(rig.data_dir, plan.input, rig.work)
    restart_s = rig.start_server()
    left_open, recovery_s = wait_recovered(rig)
    entry = entry_after(rig, at_kill.entry_id)
    after = rig.snapshot(previous=before)
    steps = [(str(s["kind"]), s) for s in (entry or {}).get("journal", [])]
    result = FaultResult(
        plan=plan,
        kill=kill,
        at_kill=at_kill,
        final_state=entry["state"] if entry else "none",
        final=journal_facts(steps),
        answer=str((entry or {}).get("answer") or pending.error or ""),
        expected=expected_state(plan, at_kill),
        world=world_problem(entry, before, after),
        violations=invariant(after, seed),
        left_open=left_open,
        restart_s=restart_s,
        recovery_s=recovery_s,
    )
    return result, after


def as_expected(r: FaultResult) -> bool:
    if r.expected == "nothing done":
        return r.final_state in ("failed", "none")
    return r.final_state == r.expected


def print_fault(r: FaultResult) -> None:
    k = r.at_kill.facts
    undone = f" ({r.final.undone} undone)" if r.final.undone else ""
    flags = [] if as_expected(r) else [f"EXPECTED {r.expected}: {short(r.answer, 120)}"]
    flags += [f"WORLD: {r.world}"] if r.world else []
    flags += [f"INVARIANT: {short('; '.join(r.violations), 200)}"] if r.violations else []
    flags += [f"OPEN: {r.left_open}"] if r.left_open else []
    flags += [f"ANSWERED CALLS MADE AGAIN: {r.final.redone}"] if r.final.redone else []
    line = (
        f"{r.plan.n:>3} {r.plan.kind:<7} {r.plan.user:<5} {short(r.plan.piece.label, 44):<44} "
        f"kill at {r.kill}: {r.at_kill.landed:<17} {k.steps:>2} steps"
        f" {k.in_flight} in flight -> {r.final_state}{undone}, back in {r.restart_s:.1f} s"
        f"  {'  '.join(flags)}"
    )
    print(line.rstrip())


# -- the fault runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One entry not killed, in seconds from sending its POST: its answer, its saga's first and last step."""

    answered: float
    first_call: float
    last_step: float


def saga_steps_us(data_dir: Path, entry_id: str) -> tuple[int, int]:
    """Wall-clock microseconds of the entry's first and last journal step (read from the live database)."""
    db = sqlite3.connect(f"file:{data_dir / 'aigrid.db'}?mode=ro", uri=True)
    try:
        first, last = db.execute(
            "SELECT min(created_at_us), max(created_at_us) FROM entry_journal WHERE entry_id = ?", (entry_id,)
        ).fetchone()
    finally:
        db.close()
    if first is None:
        raise BenchError(f"entry {entry_id} has an empty journal")
    return int(first), int(last)


def calibrate_one(rig: Rig, plan: FaultPlan, before: State, seed: dict[str, int]) -> tuple[Timing, State]:
    """One entry on a server just restarted, as each killed one is, and not killed."""
    rig.server.kill()
    rig.start_server()
    sent_us, began = time.time_ns() // 1000, time.monotonic()
    with rig.client(timeout=TASK_WAIT_S + 60) as client:
        entry = settle(client, ask(client, plan.body()))
    answered = time.monotonic() - began
    after = rig.snapshot(previous=before)
    problems = invariant(after, seed)
    world = world_problem(entry, before, after)
    first, last = saga_steps_us(rig.data_dir, entry["id"])
    timing = Timing(answered, (first - sent_us) / 1e6, (last - sent_us) / 1e6)
    flags = (f"  WORLD: {world}" if world else "") + (f"  INVARIANT: {problems}" if problems else "")
    print(
        f"calibration {plan.kind:<7} {entry['state']:<6} answered in {1000 * answered:4.0f} ms, saga from"
        f" {1000 * timing.first_call:.0f} to {1000 * timing.last_step:.0f} ms after sending{flags}"
    )
    return timing, after


def calibrate(rig: Rig, rng: random.Random, seed: dict[str, int], state: State) -> tuple[list[Timing], State]:
    """How long the first entries take: the kill window is placed from them."""
    timings: list[Timing] = []
    for n in range(1, CALIBRATION_RUNS + 1):
        kind = ("shop", "flight", "food", "double", "hotel")[(n - 1) % 5]
        timing, state = calibrate_one(rig, next_plan(rng, -n, state, kind), state, seed)
        timings.append(timing)
    return timings, state


@dataclass(frozen=True)
class KillPlan:
    """How kills are drawn: a share timed from sending the POST, the rest from the saga's start."""

    from_send: float  # the share of kills timed from sending
    send_window_s: float
    saga_window_s: float

    def draw(self, rng: random.Random, piece: Piece) -> Kill:
        """A kill for this plan; its saga is longer per purchase, and twice as long when it is undone."""
        if rng.random() < self.from_send:
            return Kill("send", rng.uniform(0, self.send_window_s))
        scale = piece.purchases * (2 if piece.must_fail else 1)
        return Kill("saga", rng.uniform(0, self.saga_window_s * scale))


def kill_plan(timings: list[Timing], from_send: float) -> KillPlan:
    """Windows of 1.5 times the median answer (from sending) and the median saga (from its start).

    A saga lasts a few tens of milliseconds after a longer stretch of planning and reading (the
    calibration prints both), and an entry's timing varies from run to run by more than its saga
    lasts: kills timed from sending alone land mostly in planning or after the end. So most kills
    are timed from the moment the entry leaves planning (``wait_saga``), and a share from sending.
    """
    answer = statistics.median(t.answered for t in timings)
    saga = statistics.median(t.last_step - t.first_call for t in timings)
    return KillPlan(from_send, WINDOW_FACTOR * answer, WINDOW_FACTOR * saga)


def run_faults(
    rig: Rig, count: int, rng: random.Random, seed: dict[str, int], from_send: float
) -> list[FaultResult]:
    print(f"\n## faults: {count} killed saga(s)")
    timings, state = calibrate(rig, rng, seed, rig.snapshot())
    kills = kill_plan(timings, from_send)
    print(
        f"kill: {100 * from_send:.0f}% uniform over 0-{1000 * kills.send_window_s:.0f} ms after sending,"
        f" the rest over 0-{1000 * kills.saga_window_s:.0f} ms after the saga began"
        f" ({WINDOW_FACTOR:g} x the median answer and saga; per purchase, twice for a plan that fails)"
    )
    results: list[FaultResult] = []
    for n in range(1, count + 1):
        plan = next_plan(rng, n, state)
        result, state = run_fault(rig, plan, kills.draw(rng, plan.piece), state, seed)
        print_fault(result)
        sys.stdout.flush()
        results.append(result)
    return results


def counted(values: Iterable[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in Counter(values).most_common())


def report_faults(results: list[FaultResult]) -> None:
    if not results:
        return
    total = len(results)
    mid = [r for r in results if r.at_kill.landed == "mid-saga"]
    print(f"\nfaults: {total} runs ({counted(r.plan.kind for r in results)})")
    for anchor in ("send", "saga"):
        timed = [r.at_kill.landed for r in results if r.kill.anchor == anchor]
        print(f"kills timed from the {anchor}: {len(timed)}, landed {counted(timed) or '-'}")
    flying = sum(r.at_kill.facts.in_flight > 0 for r in mid)
    print(
        f"mid-saga: {len(mid)}/{total}, {flying} with a call in flight; "
        f"journal steps at kill: {counted(str(r.at_kill.facts.steps) for r in mid)}"
    )
    print(
        f"after recovery: {counted(r.final_state for r in results)}; "
        f"failed and compensated (undo calls made): {sum(r.final.undone > 0 for r in results)}"
    )
    print(f"mid-saga kills ended: {counted(r.final_state for r in mid) or 'none'}")
    print(
        f"ended as the plan should: {sum(as_expected(r) for r in results)}/{total}; "
        f"services match the outcome: {sum(r.world is None for r in results)}/{total}"
    )
    print(
        f"calls made again after a restart: {sum(r.final.repeated for r in results)}, of which already"
        f" answered: {sum(r.final.redone for r in results)}; answered twice differently:"
        f" {sum(r.final.conflicting for r in results)}"
    )
    print(f"invariant held: {sum(not r.violations for r in results)}/{total}")
    print(f"entries left open: {sum(r.left_open for r in results)}")
    restart = [r.restart_s for r in results]
    recovery = [r.recovery_s for r in results]
    print(
        f"restart to answering: mean {statistics.mean(restart):.1f} s, max {max(restart):.1f} s; "
        f"then to no open entry: mean {statistics.mean(recovery):.2f} s, max {max(recovery):.2f} s"
    )
