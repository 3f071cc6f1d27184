"""`aigrid cluster`: the servers sharing the database, as one of them sees them."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from aigrid.cli import render
from aigrid.cli.common import JsonFlag, call


def _load(load: dict[str, Any]) -> str:
    in_flight = load.get("requests_in_flight")
    return render.NONE if in_flight is None else f"{in_flight} in flight"


def nodes(result: dict[str, Any]) -> RenderableType:
    """The nodes as a table: live ones first, then those whose lease ran out."""
    rows = []
    ordered = sorted(result["data"], key=lambda n: (not n["live"], n["name"]))
    for node in ordered:
        name = node["name"] + (" (this one)" if node.get("self") else "")
        left = f"{node['lease_left_s']:.1f} s" if node["live"] else "ended"
        rows.append(
            [
                name,
                node["epoch"],
                "yes" if node["live"] else "no",
                left,
                f"{node['heartbeat_age_s']:.1f} s ago",
                node["address"],
                _load(node.get("load") or {}),
            ]
        )
    table = render.table(
        "cluster", ("node", "epoch", "live", "lease left", "heartbeat", "address", "load"), rows
    )
    live = sum(1 for n in result["data"] if n["live"])
    summary = Text(f"{live} of {len(result['data'])} node(s) live; leases of {result['lease_s']:g} s")
    return Group(table, summary)


def cluster(as_json: JsonFlag = False) -> None:
    """List the servers sharing this database: epoch, lease, last heartbeat and load."""
    call(as_json, lambda c: c.cluster(), nodes)
