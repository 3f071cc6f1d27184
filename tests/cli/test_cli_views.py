"""The aigrid CLI's views: bills per tenant, JSON listings, top, run --wait, and spinners."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import typer
from tests.cli.conftest import FakeServer, budget_row, run, usage_answer, usage_row
from typer.core import TyperGroup
from typer.testing import CliRunner

from aigrid.cli import ask, client, common, compose, main, system

# Every test here talks to the fake server, never a real one.
pytestmark = pytest.mark.usefixtures("environment")


def _bill_line(stdout: str, tenant: str) -> str:
    """The tenant's line in the bill per tenant (below the usage table)."""
    bill = stdout.split("bill per tenant", 1)[1]
    return next(line for line in bill.splitlines() if line.split()[:1] == [tenant])


def test_usage_by_tenant_shows_a_bar_per_tenant_and_its_budgets(fake_server: FakeServer) -> None:
    rows = [
        usage_row("acme", "gpt-x", 600_000, 150_000, 1_500_000),
        usage_row("acme", "local", 100_000, 50_000, 500_000),
        usage_row("globex", "gpt-x", 50_000, 10_000, 1_000_000),
        usage_row("initech", "local", 10, 5, 0),
    ]
    fake_server.answer("GET", "/v1/usage", usage_answer(rows, ["tenant", "model"]))
    budgets = [
        budget_row("cost", 5_000_000, 2_000_000),
        budget_row("tokens", 1_000_000, 900_000) | {"period": "day"},
        budget_row("cost", 500_000, 1_000_000) | {"tenant": "globex", "period": "total"},
    ]
    fake_server.answer("GET", "/admin/budgets", {"object": "list", "data": budgets})
    result = run("usage")
    assert result.exit_code == 0, result.output
    assert [r.url.path for r in fake_server.requests] == ["/v1/usage", "/admin/budgets"]
    assert "bill per tenant" in result.stdout
    # acme's two rows summed: 2.00 CNY of 3.00, its bar two thirds of the width.
    bill, limits = result.stdout.split("budgets this period")
    acme = _bill_line(bill, "acme")
    assert acme.split()[:3] == ["acme", "2.00", "900,000"]
    assert "66.7%" in acme
    assert "━" * 13 in acme and "━" * 14 not in acme  # two thirds of 20 characters
    globex = _bill_line(bill, "globex")
    assert globex.split()[:3] == ["globex", "1.00", "60,000"] and "33.3%" in globex
    assert _bill_line(bill, "initech").split() == ["initech", "0.00", "15", "0.0%"]
    # Each budget on a line of its own, tenants in the bill's order, a bar of spent over limit.
    lines = [line for line in limits.splitlines() if line.split()[:1] in (["acme"], ["globex"])]
    assert [line.split()[0] for line in lines] == ["acme", "acme", "globex"]
    assert "2.00 / 5.00 CNY a month" in lines[0] and lines[0].rstrip().endswith(" " + "━" * 8)
    assert "900,000 / 1,000,000 tokens a day" in lines[1] and lines[1].rstrip().endswith(" " + "━" * 18)
    assert "1.00 / 0.50 CNY in all" in lines[2] and lines[2].rstrip().endswith(" " + "━" * 20)  # over: full
    assert "initech" not in limits, "a tenant without budgets has no budget line"


def test_usage_bill_shares_tokens_when_nothing_costs(fake_server: FakeServer) -> None:
    rows = [usage_row("acme", "local", 30, 0, 0), usage_row("globex", "local", 10, 0, 0)]
    fake_server.answer("GET", "/v1/usage", usage_answer(rows, ["tenant"]))
    fake_server.answer("GET", "/admin/budgets", {"object": "list", "data": []})
    result = run("usage", "--group-by", "tenant")
    assert result.exit_code == 0, result.output
    assert "share of tokens" in result.stdout
    assert "75.0%" in _bill_line(result.stdout, "acme")
    assert "25.0%" in _bill_line(result.stdout, "globex")


@pytest.mark.parametrize("status", [403, 404])
def test_usage_leaves_budgets_out_when_they_cannot_be_read(fake_server: FakeServer, status: int) -> None:
    fake_server.answer("GET", "/v1/usage", usage_answer([usage_row("acme", "m", 10, 5, 1_000)], ["tenant"]))
    refusal = {"error": {"message": "This endpoint needs the admin key.", "type": "invalid_request_error"}}
    fake_server.answer("GET", "/admin/budgets", refusal, status=status)
    result = run("usage", "--group-by", "tenant")
    assert result.exit_code == 0, result.output
    assert "budget" not in result.stdout
    assert _bill_line(result.stdout, "acme").split()[:3] == ["acme", "0.001", "15"]
    assert result.stderr == ""


def test_usage_fails_when_budgets_fail_otherwise(fake_server: FakeServer) -> None:
    fake_server.answer("GET", "/v1/usage", usage_answer([usage_row("acme", "m", 10, 5, 1_000)], ["tenant"]))
    broken = {"error": {"message": "The database is gone.", "type": "api_error"}}
    fake_server.answer("GET", "/admin/budgets", broken, status=500)
    result = run("usage")
    assert result.exit_code == 1
    assert "error: The database is gone." in result.stderr


def test_usage_json_and_other_groupings_have_no_bill(fake_server: FakeServer) -> None:
    by_model = usage_answer([usage_row("acme", "m", 10, 5, 1_000)], ["model"])
    fake_server.answer("GET", "/v1/usage", by_model)
    table = run("usage", "--group-by", "model")
    assert table.exit_code == 0, table.output
    assert "bill per tenant" not in table.stdout
    assert [r.url.path for r in fake_server.requests] == ["/v1/usage"]
    by_tenant = usage_answer([usage_row("acme", "m", 10, 5, 1_000)], ["tenant"])
    fake_server.answer("GET", "/v1/usage", by_tenant)
    as_json = run("usage", "--group-by", "tenant", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == by_tenant
    assert [r.url.path for r in fake_server.requests] == ["/v1/usage", "/v1/usage"]


# Commands that list nothing: they act, serve, or speak a protocol of their own on stdout.
_NOT_LISTINGS = {"serve", "mcp"}


def _commands(group: TyperGroup, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_command_that_shows_something_has_json() -> None:
    root = typer.main.get_command(main.app)
    assert isinstance(root, TyperGroup)
    commands = dict(_commands(root))
    assert {"usage", "top", "ps", "tenant list", "agent versions", "service list"} <= commands.keys()
    missing = [
        name
        for name, command in commands.items()
        if name not in _NOT_LISTINGS and not any("--json" in p.opts for p in command.params)
    ]
    assert missing == [], f"commands without --json: {missing}"


_LIST = {"object": "list", "data": [{"id": 1}]}


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["tenant", "list"], "/admin/tenants"),
        (["budget", "list"], "/admin/budgets"),
        (["deployments"], "/admin/deployments"),
        (["agent", "list"], "/v1/agents"),
        (["ps"], "/v1/processes"),
        (["logs", "p-1"], "/v1/processes/p-1/journal"),
        (["approvals"], "/v1/approvals"),
        (["inbox"], "/v1/inbox"),
        (["audit"], "/v1/audit"),
        (["tool", "providers"], "/admin/tools/providers"),
        (["memory", "search", "--tenant", "acme", "address"], "/v1/memory"),
        (["service", "list"], "/v1/services"),
    ],
)
def test_listing_json_is_the_api_answer(fake_server: FakeServer, args: list[str], path: str) -> None:
    fake_server.answer("GET", path, _LIST)
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == _LIST
    assert fake_server.last.url.path == path


def _process(pid: str, state: str, updated_at: int, **extra: Any) -> dict[str, Any]:
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "cost_micro": 1_500}
    return {
        "object": "process",
        "pid": pid,
        "tenant": "acme",
        "agent": "writer",
        "agent_version": 1,
        "state": state,
        "reason": None,
        "steps": 2,
        "usage": usage,
        "result": None,
        "updated_at": updated_at,
        **extra,
    }


def test_top_json_prints_one_frame_of_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    running, waiting = _process("p-1", "running", 5), _process("p-2", "waiting_approval", 9)
    done = _process("p-3", "done", 7)

    def processes(request: httpx.Request) -> httpx.Response:
        live = "state" in request.url.params
        return httpx.Response(200, json={"object": "list", "data": [waiting, running] if live else [done]})

    transport = httpx.MockTransport(processes)
    monkeypatch.setattr(system, "connect", functools.partial(client.connect, transport=transport))
    result = run("top", "--json", "--tenant", "acme")
    assert result.exit_code == 0, result.output
    frame = json.loads(result.stdout)
    # Running before waiting, then the recent ones that have ended: as the table would show them.
    assert frame == {"object": "list", "data": [running, waiting, done]}
    assert json.loads(run("top", "--json", "--rows", "1").stdout)["data"] == [running]
    table = run("top", "--once")
    assert table.exit_code == 0, table.output
    lines = [line.split()[:4] for line in table.stdout.splitlines() if "p-" in line]
    assert lines == [
        [p, "acme", "writer", s] for p, s in (("p-1", "running"), ("p-2", "waiting_approval"))
    ] + [["p-3", "acme", "writer", "done"]]


def test_run_wait_follows_the_process_to_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(main, "_FIRST_LOOK_S", 0.0)
    states = iter(["running", "waiting_tool", "done"])
    answers: list[dict[str, Any]] = []

    def look(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(201, json=_process("p-1", "ready", 1))
        answers.append(_process("p-1", next(states), 2, result="A haiku about the sea."))
        return httpx.Response(200, json=answers[-1])

    transport = httpx.MockTransport(look)
    monkeypatch.setattr(common, "connect", functools.partial(client.connect, transport=transport))
    result = run("run", "writer", "a haiku", "--tenant", "acme", "--wait")
    assert result.exit_code == 0, result.output
    assert len(answers) == 3
    assert "Process p-1 (writer v1) is done." in result.stdout
    assert "A haiku about the sea." in result.stdout
    assert result.stderr == ""  # not a terminal: no spinner


def test_run_wait_json_and_a_failure(fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    failed = _process("p-2", "failed", 3, reason="the model said no")
    fake_server.answer("POST", "/v1/processes", _process("p-2", "running", 1), status=201)
    fake_server.answer("GET", "/v1/processes/p-2", failed)
    monkeypatch.setattr(main, "_FIRST_LOOK_S", 0.0)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # a terminal, yet --json shows no spinner
    result = run("run", "writer", "x", "--tenant", "acme", "--wait", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == failed
    assert result.stderr == ""
    monkeypatch.delenv("TTY_COMPATIBLE")
    shown = run("run", "writer", "x", "--tenant", "acme", "--wait")
    assert shown.exit_code == 1
    assert "is failed" in shown.stdout and "the model said no" in shown.stdout


def test_run_wait_stops_when_a_person_must_act(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main, "_FIRST_LOOK_S", 0.0)
    asking = _process("p-4", "waiting_approval", 2, reason="shop.pay needs a yes")
    fake_server.answer("POST", "/v1/processes", _process("p-4", "running", 1), status=201)
    fake_server.answer("GET", "/v1/processes/p-4", asking)
    result = run("run", "shopper", "buy a lamp", "--tenant", "acme", "--wait")
    assert result.exit_code == 0, result.output
    assert "Process p-4 (writer v1) is waiting_approval." in result.stdout
    assert "shop.pay needs a yes (see 'aigrid approvals')" in result.stdout


def test_run_without_wait_only_starts(fake_server: FakeServer) -> None:
    fake_server.answer("POST", "/v1/processes", _process("p-3", "ready", 1), status=201)
    result = run("run", "writer", "x", "--tenant", "acme")
    assert result.exit_code == 0, result.output
    assert "Process p-3 (writer v1) is ready." in result.stdout
    assert [r.method for r in fake_server.requests] == ["POST"]


def _entry(state: str, **extra: Any) -> dict[str, Any]:
    summary = {"text": "buy Aurora X2 earbuds for 199.00"}
    return {"object": "entry", "id": "e-1", "state": state, "summary": summary, **extra}


def test_ask_shows_a_spinner_on_a_terminal_while_the_server_works(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ask, "connect", common.connect)
    fake_server.answer("POST", "/v1/entry", _entry("done", answer="Bought."))
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    shown = run("ask", "buy earbuds", "--yes")
    assert shown.exit_code == 0, shown.output
    assert "working it out" in shown.stderr and "0:00:00" in shown.stderr
    assert "Bought." in shown.stdout
    as_json = run("ask", "buy earbuds", "--yes", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert as_json.stderr == ""
    assert json.loads(as_json.stdout)["answer"] == "Bought."
    monkeypatch.delenv("TTY_COMPATIBLE")
    piped = run("ask", "buy earbuds", "--yes")
    assert piped.exit_code == 0 and piped.stderr == ""


def test_ask_spins_again_while_a_confirmed_plan_is_carried_out(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ask, "connect", common.connect)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    fake_server.answer("POST", "/v1/entry", _entry("awaiting_confirmation"))
    fake_server.answer("POST", "/v1/entry/e-1/confirm", _entry("done", answer="Bought."))
    result = CliRunner().invoke(main.app, ["ask", "buy earbuds"], input="y\n")
    assert result.exit_code == 0, result.output
    planning, _, rest = result.stderr.partition("Go ahead?")
    assert "planning" in planning
    assert "carrying it out" in rest
    assert "aigrid would:" in result.stdout and "Bought." in result.stdout


def test_agent_create_spins_while_the_model_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    draft = {"spec": {"name": "watch"}, "text": "name: watch\n", "notes": []}
    saved = {"name": "watch", "tenant": "acme", "version": 1}

    def agents(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=draft if json.loads(request.content).get("dry_run") else saved)

    transport = httpx.MockTransport(agents)
    monkeypatch.setattr(compose, "connect", functools.partial(client.connect, transport=transport))
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    result = run("agent", "create", "watch prices", "--tenant", "acme", "--yes")
    assert result.exit_code == 0, result.output
    assert "the model writes the agent" in result.stderr and "0:00:00" in result.stderr
    assert "Agent watch of tenant acme is at version 1." in result.stdout
    quiet = run("agent", "create", "watch prices", "--tenant", "acme", "--yes", "--json")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout) == saved
