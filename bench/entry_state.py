"""The example services' state around a super-entry task: what was bought, whether it was right, and
whether the money adds up.

Used by ``bench/entry.py`` (``from entry_state import ...``, with ``bench/`` on ``sys.path``) and by
``tests/examples/test_entry_state.py``. It speaks MCP over streamable HTTP to the five example
services of ``examples/services`` (``urls`` maps ``northwind``, ``lakeside``, ``payment``, ``travel``
and ``food`` to their ``http://HOST:PORT/mcp``) and only reads: ``ledger``, ``get_order``,
``get_booking`` and ``balance``.

- ``snapshot(urls)`` (``snapshot_async`` inside a running event loop): every live order and booking
  with what it bought, every payment, and each user's wallet;
- ``new_since(before, after)``: the orders and bookings a task created, in the task file's
  ``expect`` shape, and any that were live before and are cancelled after;
- ``score(task, before, after)``: did the task create exactly what it expects (and, when it expects
  nothing, move no money);
- ``invariant(state)``: the money captured equals what the live orders and bookings cost, nothing is
  left held, and each balance is the seed's minus the user's captured payments.

A task (one line of ``src/aigrid/learn/suites/entry_heldout.jsonl``) expects a list of purchases, each
``{"service": "northwind"|"lakeside"|"travel"|"food", "item": sku|flight id|hotel id|restaurant id,
"quantity": n}`` plus ``"nights"`` for a hotel and ``"items": [{"item": name, "quantity": n}]`` for
food. One order or booking is one purchase (a flight or hotel booking and a food order have
quantity 1); two orders of one item are two purchases, not one of quantity 2.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from mcp import Client
from mcp_types import CallToolResult, TextContent

ROOT = Path(__file__).resolve().parents[1]
SELLERS = ("northwind", "lakeside", "travel", "food")
SHOPS = ("northwind", "lakeside")
SERVICES = (*SELLERS, "payment")
USERS = ("alice", "bob", "carol")


class Line(TypedDict):
    """One line of a food order: a menu item by name and how many."""

    item: str
    quantity: int


class Purchase(TypedDict):
    """One order or booking in the shape of a task's ``expect``."""

    service: str
    item: str
    quantity: int
    nights: NotRequired[int]
    items: NotRequired[list[Line]]


@dataclass(frozen=True)
class Record:
    """One live order or booking of a seller, with what it bought."""

    service: str
    id: str
    payment_id: str
    amount_cents: int
    status: str
    purchase: Purchase


@dataclass(frozen=True)
class Payment:
    """One payment of the wallet service."""

    payment_id: str
    user: str
    amount_cents: int
    state: str


@dataclass(frozen=True)
class Wallet:
    """One user's wallet: the balance and the money held by authorised payments."""

    balance_cents: int
    held_cents: int


@dataclass(frozen=True)
class State:
    """The example services at one moment: live orders and bookings, every payment, the wallets."""

    records: tuple[Record, ...]
    payments: tuple[Payment, ...]
    wallets: Mapping[str, Wallet]

    def payment(self, payment_id: str) -> Payment | None:
        """The payment with this id, or None."""
        return next((p for p in self.payments if p.payment_id == payment_id), None)


@dataclass(frozen=True)
class Changes:
    """What a task changed: orders and bookings it created, and live ones that got cancelled."""

    created: list[Purchase]
    created_records: list[Record]
    vanished: list[Record] = field(default_factory=list)


@dataclass(frozen=True)
class Score:
    """Whether a task did exactly what it should, and why not."""

    passed: bool
    reason: str


class StateError(RuntimeError):
    """A service did not answer a read as it should."""


# -- reading the services -------------------------------------------------------------------------


def _text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def _call(client: Client, service: str, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error or result.structured_content is None:
        raise StateError(f"{service}.{tool}({args}) failed: {_text(result) or 'no structured answer'}")
    return dict(result.structured_content)


def _purchase(service: str, detail: Mapping[str, Any]) -> Purchase:
    """An order or booking as read by get_order/get_booking, in the ``expect`` shape."""
    if service in SHOPS:
        return {"service": service, "item": str(detail["sku"]), "quantity": int(detail["quantity"])}
    if service == "travel":
        if detail["kind"] == "hotel":
            return {
                "service": "travel",
                "item": str(detail["item_id"]),
                "quantity": 1,
                "nights": int(detail["nights"]),
            }
        return {"service": "travel", "item": str(detail["item_id"]), "quantity": 1}
    lines: list[Line] = [{"item": str(x["item"]), "quantity": int(x["quantity"])} for x in detail["items"]]
    return {"service": "food", "item": str(detail["restaurant_id"]), "quantity": 1, "items": lines}


async def _seller_records(service: str, url: str, known: Mapping[tuple[str, str], Record]) -> list[Record]:
    records: list[Record] = []
    async with Client(url, cache=None) as client:
        for entry in (await _call(client, service, "ledger"))["entries"]:
            order_id = str(entry["id"])
            seen = known.get((service, order_id))
            if seen is not None and seen.status == entry["status"]:
                records.append(seen)  # orders and bookings never change what they bought
                continue
            if service == "travel":
                detail = await _call(client, service, "get_booking", booking_id=order_id)
            else:
                detail = await _call(client, service, "get_order", order_id=order_id)
            records.append(
                Record(
                    service=service,
                    id=order_id,
                    payment_id=str(entry["payment_id"]),
                    amount_cents=int(entry["amount_cents"]),
                    status=str(entry["status"]),
                    purchase=_purchase(service, detail),
                )
            )
    return records


async def snapshot_async(
    urls: Mapping[str, str], users: Sequence[str] = USERS, previous: State | None = None
) -> State:
    """The state of the five services (``urls``: service name -> MCP URL).

    ``previous``, a snapshot of the same services, saves reading again the orders and bookings it
    already knows.
    """
    missing = [name for name in SERVICES if name not in urls]
    if missing:
        raise ValueError(f"no URL for {', '.join(missing)}; need {', '.join(SERVICES)}")
    known = {(r.service, r.id): r for r in previous.records} if previous else {}
    records: list[Record] = []
    for service in SELLERS:
        records += await _seller_records(service, urls[service], known)
    async with Client(urls["payment"], cache=None) as client:
        payments = tuple(
            Payment(
                payment_id=str(p["payment_id"]),
                user=str(p["user"]),
                amount_cents=int(p["amount_cents"]),
                state=str(p["state"]),
            )
            for p in (await _call(client, "payment", "ledger"))["entries"]
        )
        wallets: dict[str, Wallet] = {}
        for user in users:
            wallet = await _call(client, "payment", "balance", user=user)
            wallets[user] = Wallet(int(wallet["balance_cents"]), int(wallet["held_cents"]))
    return State(records=tuple(records), payments=payments, wallets=wallets)


def snapshot(urls: Mapping[str, str], users: Sequence[str] = USERS, previous: State | None = None) -> State:
    """``snapshot_async`` from synchronous code (not inside a running event loop)."""
    return asyncio.run(snapshot_async(urls, users, previous))


# -- scoring ----------------------------------------------------------------------------------------


def canonical(purchase: Mapping[str, Any]) -> str:
    """A purchase as one comparable string: food lines merged by item and sorted, extra keys dropped."""
    key: dict[str, Any] = {
        "service": purchase["service"],
        "item": purchase["item"],
        "quantity": int(purchase.get("quantity", 1)),
    }
    if purchase.get("nights") is not None:
        key["nights"] = int(purchase["nights"])
    if purchase.get("items") is not None:
        merged: Counter[str] = Counter()
        for line in purchase["items"]:
            merged[str(line["item"])] += int(line.get("quantity", 1))
        key["items"] = sorted(merged.items())
    return json.dumps(key, sort_keys=True, ensure_ascii=False)


def describe(purchase: Mapping[str, Any]) -> str:
    """A purchase in a few words, for reasons and reports."""
    text = f"{purchase['service']}:{purchase['item']}"
    if int(purchase.get("quantity", 1)) != 1:
        text += f" x{purchase['quantity']}"
    if purchase.get("nights") is not None:
        text += f" {purchase['nights']} night(s)"
    if purchase.get("items") is not None:
        text += " [" + ", ".join(f"{x['item']} x{x.get('quantity', 1)}" for x in purchase["items"]) + "]"
    return text


def new_since(before: State, after: State) -> Changes:
    """The orders and bookings live in ``after`` and not in ``before`` (in the ``expect`` shape), and
    those live in ``before`` that are no longer live in ``after`` (cancelled: it should not happen).
    """
    was = {(r.service, r.id) for r in before.records}
    now = {(r.service, r.id) for r in after.records}
    created = [r for r in after.records if (r.service, r.id) not in was]
    vanished = [r for r in before.records if (r.service, r.id) not in now]
    return Changes(created=[r.purchase for r in created], created_records=created, vanished=vanished)


def _multiset_difference(want: Iterable[Mapping[str, Any]], got: Iterable[Mapping[str, Any]]) -> list[str]:
    """What ``want`` has more of than ``got``, described."""
    shown = {canonical(p): describe(p) for p in want}
    extra = Counter(canonical(p) for p in want) - Counter(canonical(p) for p in got)
    return [shown[key] + (f" (x{n} orders)" if n > 1 else "") for key, n in sorted(extra.items())]


def score(task: Mapping[str, Any], before: State, after: State) -> Score:
    """Passed iff the task's new live orders and bookings equal its ``expect`` as a multiset, each paid
    by a payment of the task's ``user``, nothing live before was cancelled, and, when it expects
    nothing, no wallet's balance or held money changed."""
    expect: list[Mapping[str, Any]] = list(task.get("expect", []))
    changes = new_since(before, after)
    problems: list[str] = []
    missing = _multiset_difference(expect, changes.created)
    unexpected = _multiset_difference(changes.created, expect)
    if missing:
        problems.append("missing " + "; ".join(missing))
    if unexpected:
        problems.append("unexpected " + "; ".join(unexpected))
    if changes.vanished:
        gone = "; ".join(f"{describe(r.purchase)} ({r.id})" for r in changes.vanished)
        problems.append(f"cancelled what an earlier task bought: {gone}")
    user = task.get("user")
    if user is not None:
        for record in changes.created_records:
            payment = after.payment(record.payment_id)
            if payment is not None and payment.user != user:
                problems.append(
                    f"{describe(record.purchase)} is paid by {payment.user}'s payment {payment.payment_id},"
                    f" not {user}'s"
                )
    if not expect:
        for name in sorted(set(before.wallets) | set(after.wallets)):
            was, now = before.wallets.get(name), after.wallets.get(name)
            if was != now:
                problems.append(f"money moved for {name}: {_wallet_text(was)} -> {_wallet_text(now)}")
    if problems:
        return Score(False, "; ".join(problems))
    if not expect:
        return Score(True, "nothing bought and no money moved, as expected")
    return Score(True, f"bought as expected: {'; '.join(describe(p) for p in expect)}")


def _wallet_text(wallet: Wallet | None) -> str:
    if wallet is None:
        return "no wallet"
    return f"balance {wallet.balance_cents}, held {wallet.held_cents}"


# -- consistency ------------------------------------------------------------------------------------


def default_seed_dir() -> Path:
    """``$AIGRID_SHARED/fixtures/services``, else the ``shared`` folder beside the repository."""
    return Path(os.environ.get("AIGRID_SHARED", ROOT.parent / "shared")) / "fixtures" / "services"


def seed_balances(seed_dir: Path | None = None) -> dict[str, int]:
    """Each user's balance in the seed ``wallet.json``."""
    path = (seed_dir or default_seed_dir()) / "wallet.json"
    wallets = json.loads(path.read_text(encoding="utf-8"))["wallets"]
    return {str(w["user"]): int(w["balance_cents"]) for w in wallets}


def invariant(state: State, seed: Mapping[str, int] | None = None) -> list[str]:
    """Every way the money does not add up, one readable line each (empty: it holds).

    - each live order or booking is paid by a ``captured`` payment of the same amount;
    - each ``captured`` payment pays for exactly one live order or booking;
    - no payment is left ``authorised`` (money held and never released);
    - each user's balance is the seed balance (``seed``, default the seed ``wallet.json``) minus the
      sum of their captured payments.
    """
    balances_at_seed = dict(seed) if seed is not None else seed_balances()
    by_id = {p.payment_id: p for p in state.payments}
    paying: dict[str, list[Record]] = {}
    violations: list[str] = []
    for record in state.records:
        paying.setdefault(record.payment_id, []).append(record)
        what = f"{record.service} {record.id} ({describe(record.purchase)}, {record.amount_cents} cents)"
        payment = by_id.get(record.payment_id)
        if payment is None:
            violations.append(f"{what} is paid by payment {record.payment_id!r}, which does not exist")
            continue
        if payment.state != "captured":
            violations.append(f"{what} is paid by payment {payment.payment_id}, which is {payment.state}")
        if payment.amount_cents != record.amount_cents:
            violations.append(
                f"{what} is paid by payment {payment.payment_id} of {payment.amount_cents} cents"
            )
    for payment_id, records in paying.items():
        if len(records) > 1:
            listed = ", ".join(f"{r.service} {r.id}" for r in records)
            violations.append(
                f"payment {payment_id} pays for {len(records)} live orders or bookings: {listed}"
            )
    for payment in state.payments:
        what = f"payment {payment.payment_id} ({payment.user}, {payment.amount_cents} cents)"
        if payment.state == "captured" and payment.payment_id not in paying:
            violations.append(f"captured {what} pays for no live order or booking")
        if payment.state == "authorised":
            violations.append(f"{what} is still authorised: the held money was never captured or released")
    for user, wallet in sorted(state.wallets.items()):
        if user not in balances_at_seed:
            violations.append(f"{user} has a wallet but no seed balance")
            continue
        captured = sum(p.amount_cents for p in state.payments if p.user == user and p.state == "captured")
        want = balances_at_seed[user] - captured
        if wallet.balance_cents != want:
            violations.append(
                f"{user}'s balance is {wallet.balance_cents} cents, but the seed's"
                f" {balances_at_seed[user]} minus {captured} captured is {want}"
            )
    return violations
