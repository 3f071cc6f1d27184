"""The read-only part of a plan: searches and choices run at once, before anyone confirms anything.

Steps run in waves: every step whose steps before it have run goes in the same wave, so the two
shops are searched at the same time. What the plan would change in the world comes out as
purchases, with their arguments filled in and their price known, for the user to confirm.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

from aigrid.entry.calls import Caller, Refused, Unknown
from aigrid.entry.catalog import Catalog, Operation
from aigrid.entry.plan import (
    CallStep,
    ChooseStep,
    Item,
    Plan,
    PlanError,
    PlanFault,
    choose,
    count_of,
    depends_on,
    fees_cents,
    items_of,
    price_cents,
    references,
    resolve,
)


@dataclass(frozen=True, slots=True)
class Purchase:
    """A world-changing call the user confirms: what, from whom, for how much (None: nothing paid)."""

    call: str  # service.operation
    args: dict[str, Any]
    seller: str
    item: str
    count: int
    amount_cents: int | None

    def to_json(self) -> dict[str, Any]:
        """The purchase as the summary keeps it."""
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Purchase:
        """A purchase as the summary kept it."""
        return Purchase(**data)


@dataclass(frozen=True, slots=True)
class Reading:
    """What the read-only steps found: the chosen items, and the purchases the plan leads to."""

    chosen: dict[str, Item]
    purchases: list[Purchase]


async def read(plan: Plan, catalog: Catalog, caller: Caller) -> Reading:
    """Run the plan's read-only steps; PlanError says why the plan cannot go on (nothing found...)."""
    results: dict[str, tuple[str, Any]] = {}  # step -> (service, result)
    chosen: dict[str, Item] = {}
    acting = [s for s in plan.steps if isinstance(s, CallStep) and _operation(catalog, s.call).changes_world]
    pending = [s for s in plan.steps if s not in acting]
    while pending:
        done = set(results) | set(chosen)
        wave = [s for s in pending if all(d in done for d in depends_on(s))]
        if not wave:
            raise PlanFault("the plan's steps wait for each other")
        pending = [s for s in pending if s not in wave]
        for choice in [s for s in wave if isinstance(s, ChooseStep)]:
            found = [i for ref in choice.from_ for i in items_of(*results[ref])]
            needed = _needed(choice.id, acting)
            chosen[choice.id] = _choose(choice, found, [results[ref][0] for ref in choice.from_], needed)
        calls = [s for s in wave if isinstance(s, CallStep)]
        answers = await asyncio.gather(*(_read_call(s, catalog, caller, results, chosen) for s in calls))
        for step, answer in zip(calls, answers, strict=True):
            results[step.id] = (_operation(catalog, step.call).service, answer)
    purchases = [_purchase(s, catalog, results, chosen) for s in acting]
    return Reading(chosen, purchases)


def _operation(catalog: Catalog, name: str) -> Operation:
    operation = catalog.get(name)
    if operation is None:
        raise PlanError(f"the plan calls '{name}', which no service that is up offers")
    return operation


def _needed(choice: str, acting: list[CallStep]) -> int:
    """How many of the chosen item the plan's orders take (1 when none says): a shop that has fewer
    is no place to buy them."""
    counts = [
        quantity
        for s in acting
        if choice in {ref for ref, _ in references(s.args)}
        and isinstance(quantity := s.args.get("quantity"), int)
        and not isinstance(quantity, bool)
    ]
    return max(counts, default=1)


def _choose(step: ChooseStep, found: list[Item], services: list[str], needed: int) -> Item:
    try:
        return choose(step, found, needed)
    except PlanError as exc:
        where = ", ".join(dict.fromkeys(services))
        raise PlanError(f"{exc} at {where}") from exc


async def _read_call(
    step: CallStep,
    catalog: Catalog,
    caller: Caller,
    results: dict[str, tuple[str, Any]],
    chosen: dict[str, Item],
) -> Any:
    operation = _operation(catalog, step.call)
    args = resolve(step.args, _lookup(results, chosen))
    try:
        return await caller.once(operation, args, f"{caller.entry_id}:read:{step.id}")
    except (Refused, Unknown) as exc:
        raise PlanError(f"{operation.name} failed: {exc}") from exc


def _lookup(results: dict[str, tuple[str, Any]], chosen: dict[str, Item]) -> Any:
    def value(step: str, field: str) -> Any:
        if step in chosen:
            return chosen[step].get(field)
        result = results[step][1]
        if isinstance(result, dict) and field in result:
            return result[field]
        raise PlanFault(f"the result of '{step}' has no field '{field}'")

    return value


def _purchase(
    step: CallStep, catalog: Catalog, results: dict[str, tuple[str, Any]], chosen: dict[str, Item]
) -> Purchase:
    operation = _operation(catalog, step.call)
    items = [chosen[ref] for ref, _ in references(step.args) if ref in chosen]
    # The item that is paid for is the one with a price (the dish, not the restaurant it is from).
    item = next((i for i in reversed(items) if price_cents(i) is not None), items[0] if items else None)
    # The seller is the service the chosen item came from: the cheaper shop, not the one first named.
    if item is not None and item.service != operation.service:
        operation = catalog.sibling(operation, item.service) or operation
    args = resolve(step.args, _lookup(results, chosen))
    count = count_of(args)
    amount: int | None = None
    if operation.paid:
        if catalog.payment is None:
            raise PlanError(f"{operation.name} must be paid, and no payment service is registered")
        unit = price_cents(item) if item is not None else None
        if item is None or unit is None:
            raise PlanFault(f"the plan does not say what {operation.name} costs: it orders no chosen item")
        amount = unit * count + fees_cents(item)
    label = item.label if item is not None else operation.op.replace("_", " ")
    return Purchase(operation.name, args, operation.service, label, count, amount)
