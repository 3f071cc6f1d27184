"""The super entry end to end: the task suite against the example services, and sagas under SIGKILL.

    .venv/bin/python bench/entry.py                       # 43 tasks, then 50 killed sagas (30+ min)
    .venv/bin/python bench/entry.py --tasks 5 --faults 5  # a smoke run
    .venv/bin/python bench/entry.py --tasks 0             # the fault part alone
    .venv/bin/python bench/entry.py --only purchase --faults 0 --config my.toml

It starts the five example services (``examples/services``) on free ports with fresh databases, and
``aigrid serve`` on a free port with a fresh data dir (the embedded SmolLM2 unless ``--config`` names
another model), registers the services through ``POST /admin/services`` with the admin key the server
wrote, and stops everything at the end, on Ctrl-C and SIGTERM too. Scratch files go under
``bench/.work/`` (``--keep`` keeps them, with the server's and the services' logs).

Suite: each task of ``tests/data/entry_tasks.jsonl`` is asked with ``confirm: true`` (its user, wait
300 s); the services' state before and after is scored (``entry_state.score``) and the money checked
(``entry_state.invariant``).

Faults: purchase plans built here (no model; shop orders, flights, hotels, food, two purchases in one
plan, and purchases the seller refuses once the money is held) are sent with ``confirm: true``, and the
server is killed (SIGKILL, its whole process group) after a random delay: most kills uniformly over 0
to 1.5 times the median saga after the entry leaves planning (the bench polls the server's database,
read-only), a share (``--from-send``) over 0 to 1.5 times the median answer after sending the POST;
both medians come from a few entries first sent without a kill. The server is started again on the
same data dir and port; it must carry every open saga to its end within 60 s of answering, and the
money must add up. Where each kill landed is read from the server's database right after the kill.
It exits 1 if the money does not add up or an entry is left open.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aigrid.config import load_config
from entry_state import State, default_seed_dir, invariant, new_since, score, seed_balances, snapshot
from processes import signals_raise, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
SERVICES_DIR = ROOT / "examples" / "services"
TASKS = ROOT / "tests" / "data" / "entry_tasks.jsonl"
# name, script and its arguments, manifest
SERVICES = (
    ("northwind", ("shop.py", "--shop", "northwind"), "shop"),
    ("lakeside", ("shop.py", "--shop", "lakeside"), "shop"),
    ("payment", ("payment.py",), "payment"),
    ("travel", ("travel.py",), "travel"),
    ("food", ("food.py",), "food"),
)
OPEN_STATES = ("planning", "running", "compensating")
TASK_WAIT_S = 300
SERVER_START_S = 180.0
RECOVERY_S = 60.0
CALIBRATION_RUNS = 5
WINDOW_FACTOR = 1.5


class BenchError(RuntimeError):
    """What stops the benchmark, with the reason."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0


def short(text: str, width: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- processes ----------------------------------------------------------------------------------------


@dataclass
class Child:
    """One process of the rig, in its own process group, its output appended to its log."""

    name: str
    argv: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.name} exited ({self.proc.returncode}); {self.log}:\n{tail}")

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not listens(self.port):
            self.check()
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} does not listen on port {self.port} after {timeout:g} s")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the process and everything in its group, at once."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)


def aigrid_command() -> str:
    beside = Path(sys.executable).parent / "aigrid"
    return str(beside if beside.exists() else ROOT / ".venv" / "bin" / "aigrid")


class Rig:
    """The five services and one aigrid server, each on a free port, under one scratch folder."""

    def __init__(self, work: Path, config: Path | None) -> None:
        self.work = work
        self.seed = default_seed_dir()
        self.services: dict[str, Child] = {}
        self.manifests: dict[str, str] = {}
        for name, (script, *args), manifest in SERVICES:
            port = free_port()
            argv = [sys.executable, str(SERVICES_DIR / script), *args, "--port", str(port)]
            argv += ["--data-dir", str(work / "services"), "--seed", str(self.seed)]
            self.services[name] = Child(name, argv, port, work / f"{name}.log")
            self.manifests[name] = manifest
        self.urls = {name: f"http://127.0.0.1:{c.port}/mcp" for name, c in self.services.items()}
        self.data_dir = work / "aigrid"
        port = free_port()
        argv = [aigrid_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--data-dir", str(self.data_dir)] + (["--config", str(config)] if config else [])
        self.server = Child("aigrid", argv, port, work / "aigrid.log")
        self.base = f"http://127.0.0.1:{port}"
        self.key = ""

    def start(self) -> None:
        (self.work / "services").mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for child in self.services.values():
            child.start()
        for child in self.services.values():
            child.wait_listening()
        self.start_server()
        self.register()

    def start_server(self) -> float:
        """Start aigrid and wait until /healthz answers; the seconds it took."""
        began = time.monotonic()
        self.server.start()
        deadline = began + SERVER_START_S
        with httpx.Client(base_url=self.base, timeout=2) as client:
            while not self._healthy(client):
                self.server.check()
                if time.monotonic() > deadline:
                    raise BenchError(f"aigrid did not answer in {SERVER_START_S:g} s; see {self.server.log}")
                time.sleep(0.2)
        self.key = (self.data_dir / "admin_key").read_text(encoding="utf-8").strip()
        return time.monotonic() - began

    @staticmethod
    def _healthy(client: httpx.Client) -> bool:
        try:
            return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def register(self) -> None:
        with self.client() as client:
            for name, manifest in self.manifests.items():
                path = SERVICES_DIR / f"{manifest}.manifest.json"
                body = {"name": name, "kind": "mcp", "url": self.urls[name]}
                body["manifest"] = json.loads(path.read_text(encoding="utf-8"))
                added = client.post("/admin/services", json=body)
                if added.status_code != 201:
                    raise BenchError(f"registering {name}: {added.status_code} {added.text}")

    def snapshot(self, previous: State | None = None) -> State:
        return snapshot(self.urls, previous=previous)

    def close(self) -> None:
        for child in [self.server, *self.services.values()]:
            child.stop()


def model_in_use(config: Path | None) -> str:
    """The model the planner uses, as the server's config resolves it."""
    loaded = load_config(config)
    wanted = loaded.kernel.planner_model
    for model in loaded.models:
        if wanted == model.name or wanted in model.aliases:
            deployments = ", ".join(
                f"{d.backend} {d.upstream_model or d.name or ''}" for d in model.deployments
            )
            return f"{model.name} ({deployments})"
    named = [m.name for m in loaded.models if any(d.tier == wanted for d in m.deployments)]
    return f"tier {wanted}: {', '.join(named) or 'no model'}"


def open_entries(client: httpx.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for state in OPEN_STATES:
        listed = client.get("/v1/entry", params={"state": state, "limit": 500})
        listed.raise_for_status()
        found += listed.json()["data"]
    return found


def ask(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/v1/entry", json=body)
    if answer.status_code != 200:
        raise BenchError(f"POST /v1/entry: {answer.status_code} {short(answer.text, 300)}")
    return dict(answer.json())


# -- the suite ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskResult:
    id: str
    kind: str
    passed: bool
    state: str
    seconds: float
    reason: str
    must_buy_nothing: bool
    bought_nothing: bool
    violations: list[str]


def load_tasks(limit: int | None, only: str | None) -> list[dict[str, Any]]:
    tasks = [json.loads(line) for line in TASKS.read_text(encoding="utf-8").splitlines() if line.strip()]
    tasks = tasks if limit is None else tasks[:limit]
    return [t for t in tasks if only is None or t["kind"] == only]


def settle(client: httpx.Client, entry: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """The entry once it has ended (or as it is after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while entry["state"] in OPEN_STATES and time.monotonic() < deadline:
        time.sleep(0.5)
        entry = client.get(f"/v1/entry/{entry['id']}").json()
    return entry


def run_task(rig: Rig, task: dict[str, Any], before: State, seed: dict[str, int]) -> tuple[TaskResult, State]:
    body = {"input": task["input"], "user": task["user"], "confirm": True, "wait": TASK_WAIT_S}
    began = time.monotonic()
    state, error, answer = "error", "", ""
    with rig.client(timeout=TASK_WAIT_S + 60) as client:
        try:
            entry = settle(client, ask(client, body))
            state, answer = entry["state"], str(entry.get("answer") or entry.get("summary") or "")
        except (httpx.HTTPError, BenchError) as exc:
            error = f"request failed: {exc}"
    seconds = time.monotonic() - began
    after = rig.snapshot(previous=before)
    scored = score(task, before, after)
    nothing = not new_since(before, after).created and before.wallets == after.wallets
    result = TaskResult(
        id=task["id"],
        kind=task["kind"],
        passed=scored.passed and not error,
        state=state,
        seconds=seconds,
        reason=error or (scored.reason if scored.passed else f"{scored.reason} | answer: {answer}"),
        must_buy_nothing=not task.get("expect"),
        bought_nothing=nothing,
        violations=invariant(after, seed),
    )
    return result, after


def print_task(r: TaskResult) -> None:
    verdict = "passed" if r.passed else "failed"
    flag = f"  INVARIANT: {short('; '.join(r.violations), 200)}" if r.violations else ""
    print(
        f"{r.id:<40} {r.kind:<12} {verdict:<6} {r.state:<13} {r.seconds:6.1f} s  {short(r.reason, 160)}{flag}"
    )


def run_suite(rig: Rig, tasks: list[dict[str, Any]], seed: dict[str, int]) -> list[TaskResult]:
    print(f"\n## suite: {len(tasks)} task(s)")
    results: list[TaskResult] = []
    state = rig.snapshot()
    for task in tasks:
        result, state = run_task(rig, task, state, seed)
        print_task(result)
        sys.stdout.flush()
        results.append(result)
    return results


def report_suite(results: list[TaskResult], model: str) -> None:
    if not results:
        return
    passed = sum(r.passed for r in results)
    print(f"\nsuite: {passed}/{len(results)} passed ({100 * passed / len(results):.0f}%), model {model}")
    kinds = Counter(r.kind for r in results)
    for kind in sorted(kinds):
        ok = sum(r.passed for r in results if r.kind == kind)
        print(f"  {kind:<12} {ok}/{kinds[kind]} ({100 * ok / kinds[kind]:.0f}%)")
    nothing = [r for r in results if r.must_buy_nothing]
    print(f"must buy nothing: {sum(r.bought_nothing for r in nothing)}/{len(nothing)} bought nothing")
    broken = [r for r in results if r.violations]
    print(f"invariant violations: {sum(len(r.violations) for r in results)} (after {len(broken)} task(s))")
    seconds = [r.seconds for r in results]
    print(f"seconds per task: mean {statistics.mean(seconds):.1f}, p95 {p95(seconds):.1f}")


# -- fault plans ----------------------------------------------------------------------------------------

# (words, quantity at most, dearest price in either shop): items both shops list, or with deep stock.
SHOP_ITEMS = (
    ("quill fountain pen", 2, 19900),
    ("summit yoga mat", 2, 12900),
    ("orchid phone case", 2, 4900),
    ("willow desk lamp", 2, 16900),
    ("kestrel m3 wireless mouse", 2, 15900),
    ("pebble 10000mah power bank", 1, 12900),
    ("jade green tea", 1, 6800),
    ("quill a5 notebook", 1, 3900),
)
# (from, to, date, rule, dearest flight on the route that day)
FLIGHTS = (
    ("Hangzhou", "Shanghai", "2026-12-06", "cheapest", 73000),
    ("Hangzhou", "Beijing", "2026-12-06", "cheapest", 110000),
    ("Shanghai", "Chengdu", "2026-12-06", "cheapest", 68000),
    ("Shanghai", "Chengdu", "2026-12-06", "earliest", 68000),
    ("Shenzhen", "Chengdu", "2026-12-06", "cheapest", 61000),
    ("Hangzhou", "Shenzhen", "2026-12-05", "earliest", 52000),
    ("Chengdu", "Beijing", "2026-12-06", "earliest", 88000),
)
# (city, words, rule, price per night)
HOTELS = (
    ("Hangzhou", "pine inn", "cheapest", 37000),
    ("Beijing", "maple inn", "cheapest", 34000),
    ("Shanghai", "harbor inn", "cheapest", 37000),
    ("Shanghai", "hotel", "best", 60000),
    ("Chengdu", "crane inn", "cheapest", 32000),
)
# (city, cuisine words, dish words, dearest dish price); delivery is 500 more
DISHES = (
    ("Hangzhou", "noodles", "beef noodle soup", 2800),
    ("Hangzhou", "cantonese", "egg tarts", 1800),
    ("Hangzhou", "salad", "tofu quinoa bowl", 3900),
    ("Hangzhou", "noodles", "cucumber salad", 1200),
    ("Shanghai", "seafood", "crab fried rice", 6800),
)
DELIVERY_CENTS = 500
# The world refuses these after the money is authorised: out of stock, sold out, full, closed.
REFUSED = ("shop-no-stock", "flight-sold-out", "hotel-full", "food-closed")
KINDS = {"shop": 5, "flight": 3, "hotel": 3, "food": 3, "double": 4, "refused": 3}

Steps = list[dict[str, Any]]


@dataclass(frozen=True)
class Piece:
    """Part of a plan: its steps, what it buys in words, how many purchases, the most it may cost."""

    steps: Steps
    label: str
    purchases: int
    bound_cents: int
    must_fail: bool = False


def shop_piece(
    p: str,
    words: str,
    quantity: int,
    price: int,
    shops: Iterable[str] = ("northwind", "lakeside"),
    where: str = "available",
) -> Piece:
    names = list(shops)
    steps: Steps = [
        {"id": f"{p}s{i}", "call": f"{s}.search", "args": {"query": words}} for i, s in enumerate(names)
    ]
    choose = {
        "id": f"{p}pick",
        "choose": "cheapest",
        "from": [s["id"] for s in steps],
        "where": where,
        "match": words,
    }
    buy = {
        "id": f"{p}buy",
        "call": f"{names[0]}.create_order",
        "args": {"sku": f"${p}pick.sku", "quantity": quantity},
    }
    return Piece([*steps, choose, buy], f"{quantity} x {words}", 1, price * quantity, where == "any")


def flight_piece(
    p: str, frm: str, to: str, day: str, rule: str, price: int, where: str = "available", match: str = ""
) -> Piece:
    steps: Steps = [
        {
            "id": f"{p}f",
            "call": "travel.search_flights",
            "args": {"from_city": frm, "to_city": to, "date": day},
        },
        {"id": f"{p}pick", "choose": rule, "from": [f"{p}f"], "where": where, "match": match},
        {"id": f"{p}buy", "call": "travel.book", "args": {"kind": "flight", "item_id": f"${p}pick.id"}},
    ]
    return Piece(steps, f"{rule} flight {frm}-{to} {day}", 1, price, where == "any")


def hotel_piece(
    p: str, city: str, words: str, rule: str, price: int, nights: int, where: str = "available"
) -> Piece:
    steps: Steps = [
        {"id": f"{p}h", "call": "travel.search_hotels", "args": {"city": city}},
        {"id": f"{p}pick", "choose": rule, "from": [f"{p}h"], "where": where, "match": words},
        {
            "id": f"{p}buy",
            "call": "travel.book",
            "args": {"kind": "hotel", "item_id": f"${p}pick.id", "nights": nights},
        },
    ]
    return Piece(steps, f"{nights} night(s) at the {rule} {words}, {city}", 1, price * nights, where == "any")


def food_piece(
    p: str, city: str, cuisine: str, dish: str, price: int, quantity: int, where: str = "available"
) -> Piece:
    steps: Steps = [
        {"id": f"{p}r", "call": "food.restaurants", "args": {"city": city}},
        {"id": f"{p}rest", "choose": "nearest", "from": [f"{p}r"], "where": where, "match": cuisine},
        {"id": f"{p}m", "call": "food.menu", "args": {"restaurant_id": f"${p}rest.id"}},
        {"id": f"{p}dish", "choose": "first", "from": [f"{p}m"], "where": "any", "match": dish},
        {
            "id": f"{p}buy",
            "call": "food.order",
            "args": {
                "restaurant_id": f"${p}rest.id",
                "items": [{"item": f"${p}dish.item", "quantity": quantity}],
            },
        },
    ]
    bound = price * quantity + DELIVERY_CENTS
    return Piece(steps, f"{quantity} x {dish} ({cuisine}, {city})", 1, bound, where == "any")


def refused_piece(p: str, which: str) -> Piece:
    """A purchase the seller refuses once the money is held; the saga must give it back."""
    if which == "shop-no-stock":
        return shop_piece(p, "aurora x2 pro wireless earbuds", 1, 52900, shops=("lakeside",), where="any")
    if which == "flight-sold-out":
        return flight_piece(p, "Hangzhou", "Chengdu", "2026-12-05", "cheapest", 110000, where="any")
    if which == "hotel-full":
        return hotel_piece(p, "Hangzhou", "harbor hotel", "first", 63000, 1, where="any")
    return food_piece(p, "Hangzhou", "hotpot", "mala hotpot", 16800, 1, where="any")


def random_piece(rng: random.Random, p: str, kind: str) -> Piece:
    if kind == "shop":
        words, most, price = rng.choice(SHOP_ITEMS)
        return shop_piece(p, words, rng.randint(1, most), price)
    if kind == "flight":
        return flight_piece(p, *rng.choice(FLIGHTS))
    if kind == "hotel":
        city, words, rule, price = rng.choice(HOTELS)
        return hotel_piece(p, city, words, rule, price, rng.randint(1, 3))
    if kind == "food":
        city, cuisine, dish, price = rng.choice(DISHES)
        return food_piece(p, city, cuisine, dish, price, rng.randint(1, 3))
    return refused_piece(p, rng.choice(REFUSED))


def joined(first: Piece, second: Piece) -> Piece:
    return Piece(
        first.steps + second.steps,
        f"{first.label}, then {second.label}",
        first.purchases + second.purchases,
        first.bound_cents + second.bound_cents,
        first.must_fail or second.must_fail,
    )


def double_piece(rng: random.Random) -> Piece:
    """Two purchases in one plan; one time in four the second is refused and the first undone."""
    pair = rng.choice((("shop", "food"), ("flight", "hotel"), ("shop", "shop"), ("shop", "refused")))
    return joined(random_piece(rng, "x", pair[0]), random_piece(rng, "y", pair[1]))


@dataclass(frozen=True)
class FaultPlan:
    n: int
    kind: str
    user: str
    piece: Piece

    @property
    def input(self) -> str:
        return f"bench fault run {self.n:02d}: {self.piece.label}"

    def body(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "user": self.user,
            "confirm": True,
            "wait": TASK_WAIT_S,
            "plan": {"steps": self.piece.steps},
        }


def available(state: State, user: str) -> int:
    wallet = state.wallets[user]
    return wallet.balance_cents - wallet.held_cents


def next_plan(rng: random.Random, n: int, state: State, kind: str | None = None) -> FaultPlan:
    """A random plan (``kind`` or one drawn by weight), paid by carol or alice, whoever can afford it."""
    kind = kind or rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    piece = double_piece(rng) if kind == "double" else random_piece(rng, "x", kind)
    users = ["carol", "alice"] if rng.random() < 0.3 else ["alice", "carol"]
    payer = next((u for u in users if available(state, u) >= piece.bound_cents), None)
    if payer is None:  # nobody can pay: the payment service refuses to authorise, nothing is bought
        piece = Piece(piece.steps, piece.label + " (more than anyone has)", piece.purchases, 0, True)
    return FaultPlan(n, kind, payer or "alice", piece)


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


# -- main -------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> int:
    model = model_in_use(args.config)
    seed = seed_balances(default_seed_dir())
    rig = Rig(work, args.config)
    try:
        began = time.monotonic()
        rig.start()
        print(
            f"# aigrid entry bench: model {model}; services and server up in {time.monotonic() - began:.1f} s"
        )
        suite = run_suite(rig, load_tasks(args.tasks, args.only), seed) if args.tasks != 0 else []
        faults = (
            run_faults(rig, args.faults, random.Random(args.seed), seed, args.from_send)
            if args.faults
            else []
        )
        with rig.client() as client:
            still_open = len(open_entries(client))
    finally:
        rig.close()
    report_suite(suite, model)
    report_faults(faults)
    broken = any(r.violations for r in suite) or any(r.violations for r in faults)
    left = still_open + sum(r.left_open for r in faults)
    print(f"\nverdict: invariant {'VIOLATED' if broken else 'held'}; entries left open: {left}")
    return 1 if broken or left else 0


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=None, help="only the first N tasks (0: no suite)")
    parser.add_argument("--only", help="only tasks of this kind (purchase, booking, food, info, ...)")
    parser.add_argument("--faults", type=int, default=50, help="killed sagas (0: none)")
    parser.add_argument("--config", type=Path, help="a server config for aigrid serve --config")
    parser.add_argument(
        "--from-send", type=float, default=0.2, help="share of kills timed from sending, not from the saga"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the fault plans and kill times")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    args = parser.parse_args()
    (ROOT / "bench" / ".work").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="entry-", dir=ROOT / "bench" / ".work"))
    code = 1
    # A shell starts a background job with SIGINT ignored; Ctrl-C (or kill -INT) must still clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with signals_raise():
        try:
            code = run(args, work)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            code = 130
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
        finally:
            if args.keep or code not in (0, 130):
                print(f"scratch and logs kept in {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    cli()
