"""Rich renderings of the API's answers: tables for lists, short lines for single changes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.json import JSON
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

NONE = "—"
_USAGE_SUMS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens")
_USAGE_HEADERS = ("requests", "prompt", "completion", "cached", "total")
_NUMBER: dict[str, Any] = {"justify": "right", "no_wrap": True}  # numbers are never cut or wrapped
_WORDS: dict[str, Any] = {"overflow": "fold"}  # text wraps, and long words fold, rather than being cut
_BAR_WIDTH = 20
# A budget bar turns yellow from this share of its limit on, and red when the limit is reached.
_BUDGET_WARNING = 0.8


def when(us: int | None) -> str:
    """A microsecond timestamp as UTC date and time."""
    if not us:
        return NONE
    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def count(n: int | None) -> str:
    """A whole number with thousands separators."""
    return NONE if n is None else f"{n:,}"


def cny(micro: int) -> str:
    """Micro-CNY as CNY with thousands separators and at least two decimals."""
    whole, _, fraction = f"{Decimal(micro) / 1_000_000:,.6f}".partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def text(value: object) -> Text:
    """Any value as plain text (never Rich markup); None as a dash."""
    return Text(NONE if value is None else str(value))


def _new_table(title: str, *, show_footer: bool = False) -> Table:
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE,
        show_edge=False,
        show_footer=show_footer,
        collapse_padding=True,
    )


def _table(
    title: str, columns: Iterable[str], rows: Iterable[Iterable[object]], *, numeric: int = 0
) -> Table:
    """A table whose last `numeric` columns are right-aligned and never wrapped."""
    names = list(columns)
    table = _new_table(title)
    for i, name in enumerate(names):
        is_number = i >= len(names) - numeric
        table.add_column(name, **_NUMBER if is_number else _WORDS)
    for row in rows:
        table.add_row(*(text(cell) for cell in row))
    return table


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[object]], *, numeric: int = 0) -> Table:
    """A titled table of plain-text cells, for commands that keep their renderings beside them."""
    return _table(title, columns, rows, numeric=numeric)


def tenants(result: dict[str, Any]) -> Table:
    """GET /admin/tenants as a table."""
    rows = ((t["name"], t["id"], when(t.get("created_at_us"))) for t in result["data"])
    return _table("tenants", ("name", "id", "created (UTC)"), rows)


def created_key(result: dict[str, Any]) -> RenderableType:
    """A new key, its secret shown prominently with the warning that it is shown only once."""
    label = f" ({result['name']})" if result.get("name") else ""
    return Group(
        Text(f"Created key {result['id']} for tenant {result['tenant']}{label}:"),
        Text(""),
        Text(f"  {result['key']}", style="bold green", no_wrap=True, overflow="ignore"),
        Text(""),
        Text("This is the only time the key is shown; store it now.", style="bold yellow"),
    )


def keys(result: dict[str, Any]) -> Table:
    """GET /admin/keys as a table."""
    rows = (
        (
            k["id"],
            k["tenant"],
            k.get("name"),
            f"{k['prefix']}…",
            when(k.get("created_at_us")),
            "revoked" if k.get("revoked") else "active",
        )
        for k in result["data"]
    )
    return _table("keys", ("id", "tenant", "name", "prefix", "created (UTC)", "status"), rows)


def _budget_amount(kind: str, amount: int | None) -> str:
    if amount is None:
        return NONE
    return cny(amount) if kind == "cost" else count(amount)


def budgets(result: dict[str, Any]) -> Table:
    """A list of budgets (or one, as PUT /admin/budgets answers) as a table; costs in CNY."""
    items = result.get("data", [result])
    rows = (
        (
            b["tenant"],
            "cost (CNY)" if b["kind"] == "cost" else b["kind"],
            b["period"],
            when(b.get("period_start_us"))[:10] if b["period"] != "total" else NONE,
            *(_budget_amount(b["kind"], b.get(f)) for f in ("limit", "spent", "reserved", "remaining")),
        )
        for b in items
    )
    columns = ("tenant", "kind", "period", "since (UTC)", "limit", "spent", "reserved", "remaining")
    return _table("budgets", columns, rows, numeric=4)


def limits(result: dict[str, Any]) -> Table:
    """Rate limits (a list, or one as PUT /admin/limits answers) as a table."""
    items = result.get("data", [result])
    rows = ((r["tenant"], count(r.get("rpm")), count(r.get("tpm"))) for r in items)
    return _table("rate limits", ("tenant", "requests/min", "tokens/min"), rows, numeric=2)


def usage(result: dict[str, Any], budgets: list[dict[str, Any]] | None = None) -> RenderableType:
    """GET /v1/usage as a bill: one row per bucket and group, totals in the footer; costs in CNY.

    Grouped by tenant, the bill per tenant follows, with each tenant's ``budgets`` when given.
    """
    labels = (["start"] if result.get("interval") else []) + list(result.get("group_by") or [])
    totals = result["totals"]
    title = "usage" + (f" per {result['interval']}" if result.get("interval") else "")
    table = _new_table(title, show_footer=True)
    for i, label in enumerate(labels or [""]):
        table.add_column(
            "start (UTC)" if label == "start" else label, footer="total" if i == 0 else "", **_WORDS
        )
    for field, header in zip(_USAGE_SUMS, _USAGE_HEADERS, strict=True):
        table.add_column(header, **_NUMBER, footer=count(totals[field]))
    table.add_column("CNY", **_NUMBER, footer=cny(totals["cost_micro"]))
    for row in result["data"]:
        cells = [
            row["start"].replace("T", " ")[:16] if label == "start" else row.get(label) for label in labels
        ] or [""]
        table.add_row(
            *(text(c) for c in cells),
            *(Text(count(row[f])) for f in _USAGE_SUMS),
            Text(cny(row["cost_micro"])),
        )
    if "tenant" not in labels or not result["data"]:
        return table
    return Group(table, Text(""), tenant_bill(result, budgets))


def tenant_bill(result: dict[str, Any], budgets: list[dict[str, Any]] | None) -> RenderableType:
    """Each tenant's cost and tokens in a usage answer with a bar of its share; then its budgets' use."""
    # The rows are summed as they are: integers, so each tenant's figures are the API's own.
    spent: dict[str | None, tuple[int, int]] = {}
    for row in result["data"]:
        cost, tokens = spent.get(row.get("tenant"), (0, 0))
        spent[row.get("tenant")] = (cost + row["cost_micro"], tokens + row["total_tokens"])
    totals = result["totals"]
    by_cost = totals["cost_micro"] > 0
    whole = totals["cost_micro"] if by_cost else totals["total_tokens"]
    table = _new_table("bill per tenant")
    table.add_column("tenant", **_WORDS)
    table.add_column("CNY", **_NUMBER)
    table.add_column("tokens", **_NUMBER)
    table.add_column("share of cost" if by_cost else "share of tokens", no_wrap=True, min_width=_BAR_WIDTH)
    table.add_column("", **_NUMBER)
    ranked = sorted(spent.items(), key=lambda item: item[1], reverse=True)
    for tenant, (cost, tokens) in ranked:
        part = cost if by_cost else tokens
        table.add_row(
            text(tenant),
            Text(cny(cost)),
            Text(count(tokens)),
            ProgressBar(total=whole or 1, completed=part, width=_BAR_WIDTH),
            Text(f"{part / whole:.1%}" if whole else NONE),
        )
    if budgets is None:
        return table
    # Budgets in a table of their own, in the bill's order, so neither table is too wide for a terminal.
    limits = _new_table("budgets this period")
    limits.add_column("tenant", **_WORDS)
    limits.add_column("spent / limit", **_NUMBER)
    limits.add_column("", no_wrap=True, min_width=_BAR_WIDTH)
    for tenant, _ in ranked:
        for budget in (b for b in budgets if b["tenant"] == tenant):
            limits.add_row(text(tenant), *_budget_use(budget))
    return Group(table, Text(""), limits) if limits.row_count else table


def _budget_use(budget: dict[str, Any]) -> tuple[RenderableType, RenderableType]:
    """One budget as "spent / limit" and a bar of spent over limit."""
    kind, limit, used = budget["kind"], budget["limit"], budget["spent"]
    period = "in all" if budget["period"] == "total" else f"a {budget['period']}"
    amount = f"{_budget_amount(kind, used)} / {_budget_amount(kind, limit)}"
    style = "yellow" if used >= limit * _BUDGET_WARNING else "green"
    bar = ProgressBar(
        total=limit, completed=min(used, limit), width=_BAR_WIDTH, complete_style=style, finished_style="red"
    )
    return Text(f"{amount} {'CNY' if kind == 'cost' else 'tokens'} {period}"), bar


def _health(d: dict[str, Any]) -> Text:
    if d.get("healthy"):
        return Text("ok", style="green")
    details = [str(d.get("state"))]
    if d.get("cooldown_left_s"):
        details.append(f"retry in {d['cooldown_left_s']:.0f}s")
    if d.get("consecutive_failures"):
        details.append(f"{d['consecutive_failures']} failures in a row")
    return Text(", ".join(details), style="red")


def deployments(result: dict[str, Any]) -> RenderableType:
    """GET /admin/deployments as a table of health, load and speed, then each deployment's last error."""
    table = _new_table("deployments")
    for name in ("model", "deployment", "upstream", "tier", "health"):
        table.add_column(name, **_WORDS)
    for name in ("in flight", "requests", "failures", "ms/token", "restarts"):
        table.add_column(name, **_NUMBER)
    for d in result["data"]:
        speed = d.get("seconds_per_output_token")
        engine = d.get("engine") or {}
        table.add_row(
            text(d.get("model")),
            text(d["name"]),
            text(f"{d['backend']}:{d['upstream_model']}" if d.get("upstream_model") else d["backend"]),
            text(d.get("tier")),
            _health(d),
            *(Text(count(d.get(f))) for f in ("in_flight", "requests", "failures")),
            Text(f"{speed * 1000:,.1f}" if speed else NONE),
            Text(count(engine.get("restarts")) if engine else NONE),
        )
    notes = [
        Text.assemble((f"{d['name']}: ", "bold"), ("last error: ", "red"), str(d["last_error"]))
        for d in result["data"]
        if d.get("last_error")
    ]
    notes += [
        Text.assemble(
            (f"{d['name']}: ", "bold"),
            ("engine process ", "yellow"),
            f"{engine['state']}; last exit: {engine['last_exit']} at {when(engine.get('last_exit_at_us'))}",
        )
        for d in result["data"]
        if (engine := d.get("engine") or {}).get("last_exit")
    ]
    return Group(table, *notes)


def agents(result: dict[str, Any]) -> Table:
    """GET /v1/agents (or an agent's versions) as a table."""
    rows = (
        (
            a["name"],
            a.get("tenant"),
            a["version"],
            a["spec"]["model"],
            a["spec"]["priority"],
            ", ".join(a["spec"]["tools"]) or NONE,
            when(a["created_at"] * 1_000_000),
        )
        for a in result["data"]
    )
    return _table(
        "agents", ("name", "tenant", "version", "model", "priority", "tools", "created (UTC)"), rows
    )


def agent(result: dict[str, Any]) -> RenderableType:
    """One version of an agent: a heading, then its spec as JSON."""
    heading = Text(f"{result['name']} v{result['version']} of tenant {result.get('tenant')}", style="bold")
    return Group(heading, JSON.from_data(result["spec"]))


def saved_agent(result: dict[str, Any]) -> Text:
    """What POST /v1/agents did."""
    return Text(f"Agent {result['name']} of tenant {result.get('tenant')} is at version {result['version']}.")


def processes(result: dict[str, Any]) -> Table:
    """GET /v1/processes as a table like `ps`."""
    rows = (
        (
            p["pid"],
            p.get("tenant"),
            f"{p['agent']} v{p['agent_version']}",
            p["state"],
            p["steps"],
            count(p["usage"]["prompt_tokens"] + p["usage"]["completion_tokens"]),
            cny(p["usage"]["cost_micro"]),
            p.get("reason") or NONE,
        )
        for p in result["data"]
    )
    return _table("processes", ("pid", "tenant", "agent", "state", "steps", "tokens", "cost", "reason"), rows)


def process(result: dict[str, Any]) -> Text:
    """One process after a start or a signal."""
    return Text(
        f"Process {result['pid']} ({result['agent']} v{result['agent_version']}) is {result['state']}."
    )


def journal(result: dict[str, Any]) -> RenderableType:
    """A process's steps, one line each, as `logs` shows them."""
    lines = []
    for step in result["data"]:
        detail = {k: v for k, v in step.items() if k not in ("object", "seq", "kind", "at_us")}
        lines.append(
            Text(f"{step['seq']:>4}  {when(step['at_us'])}  {step['kind']:<15} ") + Text(str(detail))
        )
    return Group(*lines) if lines else Text("No steps yet.")


def ended(result: dict[str, Any]) -> RenderableType:
    """A process that `run --wait` followed: how it ended, then its result or the reason."""
    heading = process(result)
    if result["state"] == "done":
        return Group(heading, Text(str(result.get("result") or "")))
    if result["state"] in ("failed", "killed"):
        return Group(heading, Text(result.get("reason") or NONE, style="red"))
    # It waits for a person: say what moves it on.
    hint = "aigrid approvals" if result["state"] == "waiting_approval" else f"aigrid resume {result['pid']}"
    return Group(heading, Text(f"{result.get('reason') or NONE} (see '{hint}')", style="yellow"))


def approvals(result: dict[str, Any]) -> Table:
    """GET /v1/approvals as an inbox."""
    rows = (
        (
            a["id"],
            a.get("tenant"),
            a["agent"],
            a["tool"],
            str(a.get("arguments")),
            when(a["requested_at"] * 1_000_000),
        )
        for a in result["data"]
    )
    return _table("approvals", ("id", "tenant", "agent", "tool", "arguments", "asked (UTC)"), rows)


def tools(result: dict[str, Any]) -> Table:
    """GET /v1/tools: what agents can be granted."""
    rows = (
        (t["name"], t["provider"], t.get("tenant") or "all", t["description"][:80]) for t in result["data"]
    )
    return _table("tools", ("name", "provider", "tenant", "description"), rows)


def providers(result: dict[str, Any]) -> Table:
    """GET /admin/tools/providers: each provider, up or why it is down."""
    rows = (
        (
            p["name"],
            p["source"],
            p["origin"],
            p.get("config", {}).get("tenant") or "all",
            p["state"] if p["state"] == "up" else f"down: {p['error']}",
            _auth(p.get("auth")),
            len(p["tools"]),
        )
        for p in result["data"]
    )
    return _table("tool providers", ("name", "source", "from", "tenant", "state", "auth", "tools"), rows)


def _auth(auth: dict[str, Any] | None) -> str:
    """A provider's authentication in a few words: a header, or OAuth and whether it holds a token."""
    if not auth:
        return ""
    if auth["type"] != "oauth":
        return str(auth["type"])
    state = "token" if auth["authorised"] else "no token"
    if auth["authorised"] and auth.get("expires_at"):
        state += f" until {when(auth['expires_at'] * 1_000_000)}"
    return f"oauth ({auth['client']} client, {state})"


def login(result: dict[str, Any]) -> Text:
    """POST /admin/tools/providers/{name}/login: the address to open."""
    return Text(
        f"Open this address in a browser and log in for aigrid:\n\n{result['authorization_url']}\n\n"
        "The browser is then sent to an address that may not load: copy it from the address bar."
    )


def provider(result: dict[str, Any]) -> Text:
    """What adding or removing a provider did."""
    if result.get("deleted"):
        return Text(f"Tool provider {result['name']} is removed.")
    if result.get("state") == "down":
        return Text(f"Tool provider {result['name']} is kept, but down: {result['error']}")
    names = ", ".join(result["tools"])
    return Text(f"Tool provider {result['name']} is up with {len(result['tools'])} tool(s): {names}")


def audit(result: dict[str, Any]) -> Table:
    """GET /v1/audit: tool calls, newest first."""
    rows = (
        (
            when(a["at_us"]),
            a.get("tenant"),
            a["pid"],
            a["agent"],
            a["tool"],
            a["outcome"],
            a["arguments_sha256"][:12],
        )
        for a in result["data"]
    )
    return _table("tool calls", ("at (UTC)", "tenant", "pid", "agent", "tool", "outcome", "arguments"), rows)


def memories(result: dict[str, Any]) -> Table:
    """GET /v1/memory."""
    rows = (
        (m["id"], "shared" if m["shared"] else m["agent"], m.get("key") or NONE, m["text"][:100])
        for m in result["data"]
    )
    return _table("memories", ("id", "whose", "key", "text"), rows)


def memory(result: dict[str, Any]) -> Text:
    """What remembering or forgetting did."""
    if result.get("deleted"):
        return Text(f"Memory {result['id']} is forgotten.")
    return Text(f"Remembered as memory {result['id']}.")


def inbox(result: dict[str, Any]) -> Table:
    """GET /v1/inbox: agents' notes and triggered runs' results, with their webhook delivery."""
    rows = (
        (
            m["id"],
            when(m["created_at"] * 1_000_000),
            m.get("tenant"),
            m["kind"],
            m.get("agent") or NONE,
            m.get("pid") or NONE,
            m["text"],
            _delivery(m.get("delivery")),
        )
        for m in result["data"]
    )
    columns = ("id", "at (UTC)", "tenant", "kind", "agent", "pid", "text", "webhook")
    return _table("inbox", columns, rows)


def _delivery(delivery: dict[str, Any] | None) -> str:
    if delivery is None:
        return NONE
    if delivery.get("delivered_at"):
        return "delivered"
    error = delivery.get("error")
    return f"{delivery['attempts']} tries: {error}" if error else "pending"


def top(shown: list[dict[str, Any]], rates: dict[str, float]) -> Table:
    """One frame of `aigrid top`."""
    rows = (
        (
            p["pid"],
            p.get("tenant"),
            p["agent"],
            p["state"],
            p["steps"],
            count(p["usage"]["prompt_tokens"] + p["usage"]["completion_tokens"]),
            f"{rates[p['pid']]:.0f}" if p["pid"] in rates else NONE,
            cny(p["usage"]["cost_micro"]),
            (p.get("reason") or NONE)[:60],
        )
        for p in shown
    )
    return _table(
        "processes", ("pid", "tenant", "agent", "state", "steps", "tokens", "tok/s", "cost", "reason"), rows
    )


def services(result: dict[str, Any]) -> Table:
    """GET /v1/services: each service, its category, state and operations (! confirm, ~ undo)."""
    rows = (
        (
            s["name"],
            s["category"],
            s["status"] if s["status"] == "up" else f"down: {s.get('error') or 'not opened'}",
            " ".join(
                op["name"] + ("!" if op["confirm"] else "") + (f"~{op['undo']}" if op["undo"] else "")
                for op in s["operations"]
            ),
            s["description"],
        )
        for s in result["data"]
    )
    return _table("services", ("name", "category", "status", "operations (! confirm, ~undo)", "about"), rows)


def service(result: dict[str, Any]) -> Text:
    """What POST /admin/services did."""
    count = len(result["operations"])
    return Text(f"Service {result['name']} ({result['category']}) is registered with {count} operations.")


def removed_service(result: dict[str, Any]) -> Text:
    """What DELETE /admin/services/{name} did."""
    return Text(f"Service {result['name']} is removed.")
