"""A confirmed entry carried out as a saga: authorise, order or book, capture; or undo it all.

For each purchase the saga authorises its amount with the payment service, then orders or books
with that payment, and once every purchase is placed it captures each payment. If a step fails,
what was done is compensated in reverse: captures refunded, orders and bookings undone by the
operation their manifest names, authorisations voided.

Every call is journaled before it is made (its intent, with its idempotency key) and when it
answers. A restarted server replays the journal: a call with an answer is not made again; a call
with only an intent may have happened, so it is made again under the same key, which the service
answers with the first call's result. A saga that was going forward goes on; one that was undoing
goes on undoing. So no user is charged twice and no order is left unpaid.

With an ``owner`` (a server of a cluster), every journal write and every move of the entry checks,
in its own transaction, that the entry is still this owner's and its lease still runs: a server
fenced while it was paused writes nothing more, and the peer that claimed the entry goes on from
the journal as a restarted server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aigrid.entry import answers
from aigrid.entry.calls import FIRST_RETRY_S, MAX_RETRY_S, Caller, Refused, Unknown
from aigrid.entry.catalog import Catalog, Operation
from aigrid.entry.reading import Purchase
from aigrid.store.cluster import Owner
from aigrid.store.db import StoreCalls
from aigrid.store.entries import EntryRecord, EntryState, EntryStore, JournalKind

log = logging.getLogger(__name__)

# How long the saga waits for a service it needs to come back (registered again, or up again).
_SERVICE_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class _Action:
    """One forward call of the saga: its name in the journal, the operation, how to fill its args."""

    name: str  # authorise:N, act:N or capture:N
    call: str  # service.operation
    args: Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(slots=True)
class _Journal:
    """The saga's journal replayed: which calls answered (and what), which were refused, which began."""

    results: dict[str, Any] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    begun: set[str] = field(default_factory=set)
    reason: str | None = None


class Saga:
    """Carries one confirmed entry to its end: done, or failed with everything undone."""

    def __init__(
        self,
        entry: EntryRecord,
        store: EntryStore,
        catalog: Callable[[], Awaitable[Catalog]],
        calls: StoreCalls,
        owner: Owner | None = None,
    ) -> None:
        if entry.summary is None:
            raise ValueError(f"entry {entry.id} has nothing to carry out")
        self._entry = entry
        self._store = store
        self._catalog = catalog
        self._calls = calls
        self._owner = owner
        self._caller = Caller(entry.id, entry.tenant_id)
        self._purchases = [Purchase.from_json(p) for p in entry.summary["purchases"]]
        self._payment = entry.summary.get("payment")
        self._journal = _Journal()
        self._known: Catalog | None = None  # read again only when a call's service is not in it

    async def run(self) -> EntryRecord:
        """Go forward (or on undoing, after a restart) until the entry has ended; the ended entry."""
        await self._replay()
        if self._entry.state == "running":
            reason = await self._forward()
            if reason is None:
                text = answers.done(self._purchases, self._journal.results, self._entry.user)
                return await self._end("running", "done", text)
            await self._note(reason)
            moved = await self._calls(
                self._store.move, self._entry.id, ["running"], "compensating", owner=self._owner
            )
            if moved is None:
                return await self._calls(self._store.get, self._entry.id)
        undone, problems = await self._compensate()
        text = answers.failed(self._journal.reason or "the purchase failed", undone, problems)
        return await self._end("compensating", "failed", text)

    def _actions(self) -> list[_Action]:
        pay = self._payment
        actions: list[_Action] = []
        for n, p in enumerate(self._purchases):
            if p.amount_cents is not None:
                authorise = {"user": self._entry.user, "amount_cents": p.amount_cents}
                actions.append(_Action(f"authorise:{n}", f"{pay}.authorise", partial(_given, authorise)))
                actions.append(_Action(f"act:{n}", p.call, partial(_with_payment, p.args, n)))
            else:
                actions.append(_Action(f"act:{n}", p.call, partial(_given, p.args)))
        for n, p in enumerate(self._purchases):
            if p.amount_cents is not None:
                actions.append(_Action(f"capture:{n}", f"{pay}.capture", partial(_with_payment, {}, n)))
        return actions

    async def _forward(self) -> str | None:
        """Make every forward call not yet answered; the reason the saga must be undone, if any."""
        journal = self._journal
        for action in self._actions():
            if action.name in journal.refused:
                return journal.refused[action.name]
            if action.name not in journal.results:
                try:
                    await self._make(action.name, action.call, action.args(journal.results))
                except Refused as exc:
                    return str(exc)
            problem = self._charged_as_confirmed(action.name)
            if problem:
                return problem
        return None

    def _charged_as_confirmed(self, name: str) -> str | None:
        """A seller that charged another amount than the user confirmed: the purchase is undone."""
        kind, _, n = name.partition(":")
        purchase = self._purchases[int(n)]
        result = self._journal.results.get(name)
        if kind != "act" or purchase.amount_cents is None or not isinstance(result, dict):
            return None
        charged = result.get("amount_cents")
        if isinstance(charged, int) and charged != purchase.amount_cents:
            return (
                f"{purchase.seller} charged {answers.money(charged)} for {purchase.item}, "
                f"not the {answers.money(purchase.amount_cents)} confirmed"
            )
        return None

    async def _compensate(self) -> tuple[list[str], list[str]]:
        """Undo every forward call that happened, newest first; what was undone, what could not be."""
        journal = self._journal
        actions = self._actions()
        for action in actions:  # a call that began and never answered may have happened: ask again
            if action.name in journal.begun and action.name not in journal.results | journal.refused:
                with contextlib.suppress(Refused):  # it did not happen: nothing to undo
                    await self._make(action.name, action.call, action.args(journal.results))
        undone: list[str] = []
        problems: list[str] = []
        for action in reversed(actions):
            result = journal.results.get(action.name)
            if result is None:
                continue
            kind, _, n = action.name.partition(":")
            if kind == "authorise" and f"capture:{n}" in journal.results:
                continue  # the capture's refund gave the money back
            undo = await self._undo_of(action)
            if undo is None:
                problems.append(f"{action.call} ({answers.reference(result) or 'no id'}) has no undo")
                continue
            name = f"undo:{action.name}"
            if name not in journal.results | journal.refused:  # undone before a restart: not again
                args = _undo_args(undo, result, action.args(journal.results))
                with contextlib.suppress(Refused):
                    await self._make(name, undo.name, args)
            if name in journal.refused:
                problems.append(f"{undo.name}: {journal.refused[name]}")
            else:
                undone.append(_undone(kind, undo, result))
        return undone, problems

    async def _undo_of(self, action: _Action) -> Operation | None:
        operation = await self._operation(action.call)
        if operation.service == self._payment:
            names = {"authorise": "void", "capture": "refund"}
            return await self._operation(f"{self._payment}.{names[operation.op]}")
        if operation.undo is None:
            return None
        return await self._operation(f"{operation.service}.{operation.undo}")

    async def _make(self, name: str, call: str, args: dict[str, Any]) -> Any:
        """Journal the call's intent, make it until its outcome is known, journal the outcome."""
        key = f"{self._entry.id}:{name}"
        await self._append("intent", {"action": name, "call": call, "args": args})
        self._journal.begun.add(name)
        try:
            value = await self._until_known(call, args, key)
        except Refused as exc:
            await self._append("refused", {"action": name, "error": str(exc)})
            self._journal.refused[name] = str(exc)
            raise
        await self._append("result", {"action": name, "value": value})
        self._journal.results[name] = value
        return value

    async def _until_known(self, call: str, args: dict[str, Any], key: str) -> Any:
        """Call until the service answers (the result, or Refused); safe because ``key`` is the same."""
        pause = FIRST_RETRY_S
        while True:
            try:
                return await self._caller.once(await self._operation(call), args, key)
            except Unknown:
                self._known = None  # a service that comes back may be a new connection
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_S)

    async def _operation(self, call: str) -> Operation:
        """The operation, waiting while its service is down or away: the saga needs it to end."""
        if self._known is not None and (operation := self._known.get(call)) is not None:
            return operation
        while True:
            self._known = await self._catalog()
            if (operation := self._known.get(call)) is not None:
                return operation
            log.warning("entry %s waits for %s, which is not up", self._entry.id, call)
            await asyncio.sleep(_SERVICE_WAIT_S)

    async def _replay(self) -> None:
        journal = self._journal
        for step in await self._calls(self._store.journal, self._entry.id):
            action = str(step.payload.get("action", ""))
            if step.kind == "intent":
                journal.begun.add(action)
            elif step.kind == "result":
                journal.results[action] = step.payload.get("value")
            elif step.kind == "refused":
                journal.refused[action] = str(step.payload.get("error", ""))
            elif step.kind == "note":
                journal.reason = str(step.payload.get("reason", ""))

    async def _note(self, reason: str) -> None:
        if self._journal.reason == reason:
            return  # journaled before a restart
        self._journal.reason = reason
        await self._append("note", {"reason": reason})

    async def _append(self, kind: JournalKind, payload: dict[str, Any]) -> None:
        """Journal a step; raises Fenced when the entry is no longer this owner's."""
        await self._calls(self._store.append, self._entry.id, kind, payload, self._owner)

    async def _end(self, from_state: str, state: EntryState, text: str) -> EntryRecord:
        moved = await self._calls(
            self._store.move, self._entry.id, [from_state], state, answer=text, owner=self._owner
        )
        return moved if moved is not None else await self._calls(self._store.get, self._entry.id)


def _given(args: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    del results  # known before the saga began
    return dict(args)


def _with_payment(args: dict[str, Any], n: int, results: dict[str, Any]) -> dict[str, Any]:
    """``args``, with the payment_id of purchase ``n``'s authorisation."""
    return {**args, "payment_id": _paid(results, n)}


def _paid(results: dict[str, Any], n: int) -> str:
    authorised = results.get(f"authorise:{n}")
    if not isinstance(authorised, dict) or not isinstance(authorised.get("payment_id"), str):
        raise Refused("the payment service's authorisation gave no payment_id")
    return str(authorised["payment_id"])


def _undo_args(undo: Operation, result: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The undo's arguments by name: from what the call returned (an order id), else what it was given."""
    filled: dict[str, Any] = {}
    for name in undo.parameters.get("properties", {}):
        if isinstance(result, dict) and name in result:
            filled[name] = result[name]
        elif name in args:
            filled[name] = args[name]
    return filled


def _undone(kind: str, undo: Operation, result: Any) -> str:
    ref = answers.reference(result) if kind == "act" else None
    what = {"capture": "payment refunded", "authorise": "payment hold released"}.get(
        kind, undo.op.replace("_", " ")
    )
    return f"{what} ({ref or (result.get('payment_id') if isinstance(result, dict) else '') or undo.service})"
