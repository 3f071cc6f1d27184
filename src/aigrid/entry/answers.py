"""What the user reads: the summary to confirm, and the answer that says what happened."""

from __future__ import annotations

from typing import Any

from aigrid.entry.plan import Item, price_cents
from aigrid.entry.reading import Purchase


def money(cents: int) -> str:
    """Integer cents as an amount with two decimals, never through a float."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100:,}.{cents % 100:02d}"


def _what(p: Purchase) -> str:
    """``2 × Kettle``, or for a stay ``Crane Hotel, 2 nights`` (one room, not two)."""
    nights = p.args.get("nights")
    if isinstance(nights, int) and not isinstance(nights, bool) and nights > 0:
        return f"{p.item}, {nights} night{'s' if nights != 1 else ''}"
    return f"{p.count} × {p.item}"


def _verb(call: str, past: bool) -> str:
    op = call.split(".", 1)[-1]
    if "book" in op or "reserve" in op:
        return "Booked" if past else "Book"
    return "Bought" if past else "Buy"


def summary(purchases: list[Purchase], user: str, payment: str | None) -> dict[str, Any]:
    """What the user confirms once: every purchase, from whom, and the total."""
    lines = []
    for p in purchases:
        cost = f" for {money(p.amount_cents)}" if p.amount_cents is not None else ""
        lines.append(f"{_verb(p.call, False)} {_what(p)} from {p.seller}{cost}")
    total = sum(p.amount_cents or 0 for p in purchases)
    if total:
        lines.append(f"Total {money(total)}, paid from {user}'s wallet.")
    return {
        "purchases": [p.to_json() for p in purchases],
        "total_cents": total,
        "payer": user,
        "payment": payment,
        "text": "\n".join(lines),
    }


def found(chosen: dict[str, Item]) -> str:
    """The answer to a question: what each choice found."""
    if not chosen:
        return "Nothing needed buying, and nothing was bought."
    parts = []
    for item in chosen.values():
        price = price_cents(item)
        cost = f" for {money(price)}" if price is not None else ""
        ident = next((str(item.fields[k]) for k in ("sku", "id") if k in item.fields), None)
        parts.append(f"{item.label}{f' ({ident})' if ident else ''} at {item.service}{cost}")
    return "Found: " + "; ".join(parts) + ". Nothing was bought."


def reference(result: Any) -> str | None:
    """The id a seller gave an order or booking (``order_id``, ``booking_id``... or ``id``)."""
    if not isinstance(result, dict):
        return None
    for key, value in result.items():
        if key.endswith("_id") and key != "payment_id" and isinstance(value, str):
            return value
    value = result.get("id")
    return value if isinstance(value, str) else None


def done(purchases: list[Purchase], results: dict[str, Any], user: str) -> str:
    """The answer after a saga that went through: what was bought, with the sellers' ids."""
    lines = []
    for n, p in enumerate(purchases):
        ref = reference(results.get(f"act:{n}"))
        cost = f" for {money(p.amount_cents)}" if p.amount_cents is not None else ""
        lines.append(
            f"{_verb(p.call, True)} {_what(p)} from {p.seller}{cost}" + (f" ({ref})" if ref else "") + "."
        )
    payments = [
        str(r.get("payment_id"))
        for k, r in results.items()
        if k.startswith("capture:") and isinstance(r, dict)
    ]
    total = sum(p.amount_cents or 0 for p in purchases)
    if total:
        lines.append(f"Paid {money(total)} from {user}'s wallet ({', '.join(payments)}).")
    return " ".join(lines)


def failed(reason: str, undone: list[str], problems: list[str]) -> str:
    """The answer after a saga that could not go through: why, and that nothing is left half done."""
    text = f"Nothing was bought: {reason}."
    if undone:
        text += " What had been done was undone: " + "; ".join(undone) + "."
    if problems:
        text += " These could not be undone and need a person: " + "; ".join(problems) + "."
    return text
