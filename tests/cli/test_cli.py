"""The aigrid CLI as a user sees it, against a fake server behind httpx.MockTransport."""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner, Result

from aigrid import __version__
from aigrid.cli import ask, client, common, compose, main, system

ADMIN_KEY = "admin-secret"
URL = "http://aigrid.test"


@dataclass
class FakeServer:
    """Answers canned JSON per (method, path) and records every request it receives."""

    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def answer(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.answers[(method, path)] = (status, body)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.answers.get(
            (request.method, request.url.path),
            (404, {"error": {"message": "Not found.", "type": "invalid_request_error", "param": None}}),
        )
        return httpx.Response(status, json=body)

    @property
    def last(self) -> httpx.Request:
        assert self.requests, "the CLI sent no request"
        return self.requests[-1]

    def last_body(self) -> Any:
        return json.loads(self.last.content)


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIGRID_URL", URL)
    monkeypatch.setenv("AIGRID_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("AIGRID_DATA_DIR", str(tmp_path / "no-data-dir"))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    server = FakeServer()
    transport = httpx.MockTransport(server.handle)
    monkeypatch.setattr(common, "connect", functools.partial(client.connect, transport=transport))
    return server


def run(*args: str) -> Result:
    return CliRunner().invoke(main.app, list(args))


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_serve_help_lists_its_options() -> None:
    result = run("serve", "--help")
    assert result.exit_code == 0
    for option in ("--config", "--host", "--port", "--data-dir"):
        assert option in result.stdout


def test_tenant_create_posts_the_name_with_the_admin_key(fake_server: FakeServer) -> None:
    fake_server.answer("POST", "/admin/tenants", {"id": 7, "name": "acme", "created_at_us": 1}, status=201)
    result = run("tenant", "create", "acme")
    assert result.exit_code == 0, result.output
    assert fake_server.last.method == "POST"
    assert fake_server.last.url == f"{URL}/admin/tenants"
    assert fake_server.last.headers["authorization"] == f"Bearer {ADMIN_KEY}"
    assert fake_server.last_body() == {"name": "acme"}
    assert "Created tenant acme (id 7)" in result.stdout


def test_tenant_list_table_and_json(fake_server: FakeServer) -> None:
    body = {
        "object": "list",
        "data": [
            {"id": 1, "name": "acme", "created_at_us": 1_700_000_000_000_000},
            {"id": 2, "name": "globex", "created_at_us": 1_700_000_000_000_000},
        ],
    }
    fake_server.answer("GET", "/admin/tenants", body)
    table = run("tenant", "list")
    assert table.exit_code == 0, table.output
    assert "acme" in table.stdout
    assert "globex" in table.stdout
    assert "2023-11-14 22:13:20" in table.stdout
    as_json = run("tenant", "list", "--json")
    assert json.loads(as_json.stdout) == body


def test_key_create_shows_the_secret_once(fake_server: FakeServer) -> None:
    answer = {
        "id": "key_1",
        "key": "sk-aigrid-0123456789abcdef",
        "tenant": "acme",
        "prefix": "sk-aigrid-0123",
        "name": "ci",
        "created_at_us": 1,
    }
    fake_server.answer("POST", "/admin/keys", answer, status=201)
    result = run("key", "create", "--tenant", "acme", "--name", "ci")
    assert result.exit_code == 0, result.output
    assert fake_server.last_body() == {"tenant": "acme", "name": "ci"}
    assert "sk-aigrid-0123456789abcdef" in result.stdout
    assert "only time the key is shown" in result.stdout


def test_key_create_json_has_the_key(fake_server: FakeServer) -> None:
    answer = {"id": "key_1", "key": "sk-aigrid-xyz", "tenant": "acme", "prefix": "sk-aigrid-xyz"}
    fake_server.answer("POST", "/admin/keys", {**answer, "name": None, "created_at_us": 1}, status=201)
    result = run("key", "create", "--tenant", "acme", "--json")
    assert result.exit_code == 0, result.output
    assert fake_server.last_body() == {"tenant": "acme", "name": None}
    assert json.loads(result.stdout)["key"] == "sk-aigrid-xyz"


def test_key_list_filters_by_tenant(fake_server: FakeServer) -> None:
    rows = [
        {
            "id": "key_1",
            "tenant": "acme",
            "prefix": "sk-a",
            "name": "ci",
            "created_at_us": 1,
            "revoked": False,
        },
        {
            "id": "key_2",
            "tenant": "acme",
            "prefix": "sk-b",
            "name": None,
            "created_at_us": 2,
            "revoked": True,
        },
    ]
    fake_server.answer("GET", "/admin/keys", {"object": "list", "data": rows})
    result = run("key", "list", "--tenant", "acme")
    assert result.exit_code == 0, result.output
    assert fake_server.last.url.params["tenant"] == "acme"
    assert "key_1" in result.stdout
    assert "active" in result.stdout
    assert "revoked" in result.stdout


def test_key_list_without_tenant_sends_no_filter(fake_server: FakeServer) -> None:
    fake_server.answer("GET", "/admin/keys", {"object": "list", "data": []})
    assert run("key", "list").exit_code == 0
    assert "tenant" not in fake_server.last.url.params


def test_key_revoke_deletes_by_id(fake_server: FakeServer) -> None:
    fake_server.answer("DELETE", "/admin/keys/key_1", {"id": "key_1", "revoked": True})
    result = run("key", "revoke", "key_1")
    assert result.exit_code == 0, result.output
    assert fake_server.last.method == "DELETE"
    assert "Revoked key key_1" in result.stdout


def _budget(kind: str, limit: int, spent: int) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "kind": kind,
        "period": "month",
        "limit": limit,
        "spent": spent,
        "reserved": 0,
        "remaining": limit - spent,
        "period_start_us": 1_700_000_000_000_000,
    }


def test_budget_set_tokens(fake_server: FakeServer) -> None:
    fake_server.answer("PUT", "/admin/budgets", _budget("tokens", 1_000_000, 250))
    result = run("budget", "set", "--tenant", "acme", "--tokens", "1000000", "--period", "month")
    assert result.exit_code == 0, result.output
    assert fake_server.last.method == "PUT"
    assert fake_server.last_body() == {"tenant": "acme", "period": "month", "tokens": 1_000_000}
    assert "1,000,000" in result.stdout
    assert "999,750" in result.stdout


def test_budget_set_cost_sends_a_decimal_string_and_shows_cny(fake_server: FakeServer) -> None:
    fake_server.answer("PUT", "/admin/budgets", _budget("cost", 12_500_000, 1_234))
    result = run("budget", "set", "--tenant", "acme", "--cost", "12.5", "--period", "month")
    assert result.exit_code == 0, result.output
    assert fake_server.last_body() == {"tenant": "acme", "period": "month", "cost": "12.5"}
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("acme"))
    assert line.split()[1:] == [
        "cost",
        "(CNY)",
        "month",
        "2023-11-14",
        "12.50",
        "0.001234",
        "0.00",
        "12.498766",
    ]


@pytest.mark.parametrize("amounts", [["--tokens", "10", "--cost", "1"], []], ids=["both", "neither"])
def test_budget_set_needs_exactly_one_amount(fake_server: FakeServer, amounts: list[str]) -> None:
    result = run("budget", "set", "--tenant", "acme", "--period", "day", *amounts)
    assert result.exit_code == 2
    assert "exactly one of --tokens or --cost" in result.stderr
    assert not fake_server.requests


@pytest.mark.parametrize(
    "bad",
    [
        ["--tokens", "0", "--period", "day"],
        ["--cost", "-1", "--period", "day"],
        ["--cost", "lots", "--period", "day"],
        ["--tokens", "5", "--period", "week"],
    ],
    ids=["zero-tokens", "negative-cost", "non-numeric-cost", "unknown-period"],
)
def test_budget_set_rejects_bad_values_before_calling(fake_server: FakeServer, bad: list[str]) -> None:
    result = run("budget", "set", "--tenant", "acme", *bad)
    assert result.exit_code == 2
    assert not fake_server.requests


def test_budget_list_and_remove(fake_server: FakeServer) -> None:
    fake_server.answer("GET", "/admin/budgets", {"object": "list", "data": [_budget("tokens", 500, 100)]})
    listed = run("budget", "list", "--tenant", "acme")
    assert listed.exit_code == 0, listed.output
    assert fake_server.last.url.params["tenant"] == "acme"
    assert "acme" in listed.stdout
    assert "400" in listed.stdout

    removed_answer = {"tenant": "acme", "kind": "tokens", "period": "month", "removed": True}
    fake_server.answer("DELETE", "/admin/budgets", removed_answer)
    removed = run("budget", "remove", "--tenant", "acme", "--kind", "tokens", "--period", "month", "--json")
    assert removed.exit_code == 0, removed.output
    assert fake_server.last.method == "DELETE"
    assert dict(fake_server.last.url.params) == {"tenant": "acme", "kind": "tokens", "period": "month"}
    assert json.loads(removed.stdout) == removed_answer


def test_limits_set_sends_null_for_an_omitted_limit(fake_server: FakeServer) -> None:
    fake_server.answer("PUT", "/admin/limits", {"tenant": "acme", "rpm": 60, "tpm": None})
    result = run("limits", "set", "--tenant", "acme", "--rpm", "60")
    assert result.exit_code == 0, result.output
    assert fake_server.last_body() == {"tenant": "acme", "rpm": 60, "tpm": None}
    assert "60" in result.stdout


def test_limits_show(fake_server: FakeServer) -> None:
    fake_server.answer("GET", "/admin/limits", {"data": [{"tenant": "acme", "rpm": 60, "tpm": 100_000}]})
    result = run("limits", "show", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data"][0]["tpm"] == 100_000
    table = run("limits", "show", "--tenant", "acme")
    assert fake_server.last.url.params["tenant"] == "acme"
    assert "100,000" in table.stdout


def _usage_row(tenant: str, model: str, prompt: int, completion: int, cost_micro: int) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "model": model,
        "requests": 3,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": 0,
        "total_tokens": prompt + completion,
        "cost_micro": cost_micro,
        "cost": f"{cost_micro / 1e6:.6f}",
    }


def test_usage_prints_a_bill_with_a_totals_row(fake_server: FakeServer) -> None:
    rows = [
        _usage_row("acme", "gpt-x", 1_200_000, 34_567, 2_500_000),
        _usage_row("globex", "local", 10, 5, 0),
    ]
    totals = {
        "requests": 6,
        "prompt_tokens": 1_200_010,
        "completion_tokens": 34_572,
        "cached_tokens": 0,
        "total_tokens": 1_234_582,
        "cost_micro": 2_500_000,
        "cost": "2.500000",
    }
    answer = {
        "object": "list",
        "group_by": ["tenant", "model"],
        "interval": None,
        "data": rows,
        "totals": totals,
    }
    fake_server.answer("GET", "/v1/usage", answer)
    result = run("usage")
    assert result.exit_code == 0, result.output
    assert dict(fake_server.requests[0].url.params) == {"group_by": "tenant,model"}
    assert "start" not in result.stdout
    assert "gpt-x" in result.stdout
    total_line = next(line for line in result.stdout.splitlines() if "total" in line and "1,234,582" in line)
    assert "1,200,010" in total_line
    assert "2.50" in total_line


def test_usage_passes_filters_through_and_shows_buckets(fake_server: FakeServer) -> None:
    row = {"start": "2025-03-01T00:00:00Z", "start_us": 1, **_usage_row("acme", "m", 1, 1, 1)}
    del row["model"]
    totals = {k: row[k] for k in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens")}
    totals |= {"total_tokens": 2, "cost_micro": 1, "cost": "0.000001"}
    answer = {"object": "list", "group_by": ["tenant"], "interval": "day", "data": [row], "totals": totals}
    fake_server.answer("GET", "/v1/usage", answer)
    args = ("--group-by", "tenant", "--interval", "day", "--since", "2025-03-01", "--until", "2025-04-01")
    result = run("usage", *args, "--tenant", "acme")
    assert result.exit_code == 0, result.output
    assert dict(fake_server.requests[0].url.params) == {
        "group_by": "tenant",
        "interval": "day",
        "since": "2025-03-01",
        "until": "2025-04-01",
        "tenant": "acme",
    }
    assert "start" in result.stdout
    assert "2025-03-01 00:00" in result.stdout
    assert json.loads(run("usage", "--json").stdout) == answer


def test_deployments_table(fake_server: FakeServer) -> None:
    deployment = {
        "model": "smollm2-135m",
        "name": "embedded-smollm2",
        "backend": "embedded",
        "upstream_model": "smollm2-135m",
        "tier": "edge",
        "state": "closed",
        "healthy": True,
        "consecutive_failures": 0,
        "cooldown_left_s": 0.0,
        "last_error": None,
        "in_flight": 2,
        "requests": 12_345,
        "failures": 1,
        "seconds_per_output_token": 0.0125,
        "engine": {
            "running": 0,
            "waiting": 0,
            "state": "running",
            "restarts": 2,
            "last_exit": "killed by SIGSEGV (a fault in native code)",
            "last_exit_at_us": 1_796_300_000_000_000,
        },
    }
    failing = deployment | {
        "model": "gpt-x",
        "name": "cloud-a",
        "backend": "openai",
        "upstream_model": "gpt-x-2025",
        "tier": "cloud",
        "state": "open",
        "healthy": False,
        "consecutive_failures": 3,
        "cooldown_left_s": 12.2,
        "last_error": "HTTP 503 from upstream",
        "seconds_per_output_token": None,
        "engine": None,
    }
    fake_server.answer("GET", "/admin/deployments", {"object": "list", "data": [deployment, failing]})
    result = run("deployments")
    assert result.exit_code == 0, result.output
    assert fake_server.last.url.path == "/admin/deployments"
    healthy_line = next(line for line in result.stdout.splitlines() if "embedded-smollm2" in line)
    assert healthy_line.split() == [
        "smollm2-135m",
        "embedded-smollm2",
        "embedded:smollm2-135m",
        "edge",
        "ok",
        "2",
        "12,345",
        "1",
        "12.5",
        "2",
    ]
    failing_line = next(line for line in result.stdout.splitlines() if "cloud-a" in line)
    assert failing_line.split()[-1] == "—", "a remote plant has no engine to restart"
    assert "open, retry in 12s, 3 failures in a row" in result.stdout
    assert "cloud-a: last error: HTTP 503 from upstream" in result.stdout
    assert (
        "embedded-smollm2: engine process running; last exit: killed by SIGSEGV (a fault in native code)"
        " at 2026-12-03 12:13:20" in result.stdout
    )


def test_an_openai_error_prints_its_message_and_exits_1(fake_server: FakeServer) -> None:
    error = {
        "error": {"message": "No tenant named 'nope'.", "type": "invalid_request_error", "code": "not_found"}
    }
    fake_server.answer("GET", "/admin/keys", error, status=404)
    result = run("key", "list", "--tenant", "nope")
    assert result.exit_code == 1
    assert "error: No tenant named 'nope'." in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_a_non_json_error_still_reports_the_status(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="Bad Gateway"))
    monkeypatch.setattr(common, "connect", functools.partial(client.connect, transport=transport))
    result = run("tenant", "list")
    assert result.exit_code == 1
    assert "error: HTTP 502" in result.stderr


def test_connection_refused_says_the_server_cannot_be_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AIGRID_URL", url)
    result = run("tenant", "list")
    assert result.exit_code == 1
    assert f"error: cannot reach aigrid at {url} (is 'aigrid serve' running?)" in result.stderr
    assert "Traceback" not in result.output


def test_admin_key_is_read_from_the_data_dir(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "admin_key").write_text("key-from-file\n", encoding="utf-8")
    monkeypatch.delenv("AIGRID_ADMIN_KEY")
    monkeypatch.setenv("AIGRID_DATA_DIR", str(tmp_path))
    fake_server.answer("GET", "/admin/tenants", {"object": "list", "data": []})
    result = run("tenant", "list")
    assert result.exit_code == 0, result.output
    assert fake_server.last.headers["authorization"] == "Bearer key-from-file"


def test_admin_key_defaults_to_dot_aigrid_in_the_working_dir(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".aigrid").mkdir()
    (tmp_path / ".aigrid" / "admin_key").write_text("local-key", encoding="utf-8")
    monkeypatch.delenv("AIGRID_ADMIN_KEY")
    monkeypatch.delenv("AIGRID_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    fake_server.answer("GET", "/admin/tenants", {"object": "list", "data": []})
    assert run("tenant", "list").exit_code == 0
    assert fake_server.last.headers["authorization"] == "Bearer local-key"


def test_missing_admin_key_exits_2(fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIGRID_ADMIN_KEY")
    result = run("tenant", "list")
    assert result.exit_code == 2
    assert "AIGRID_ADMIN_KEY" in result.stderr
    assert not fake_server.requests


def _bill(rows: list[dict[str, Any]], group_by: list[str]) -> dict[str, Any]:
    sums = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens", "cost_micro")
    totals: dict[str, Any] = {s: sum(r[s] for r in rows) for s in sums}
    totals["cost"] = f"{totals['cost_micro'] / 1e6:.6f}"
    return {"object": "list", "group_by": group_by, "interval": None, "data": rows, "totals": totals}


def _bill_line(stdout: str, tenant: str) -> str:
    """The tenant's line in the bill per tenant (below the usage table)."""
    bill = stdout.split("bill per tenant", 1)[1]
    return next(line for line in bill.splitlines() if line.split()[:1] == [tenant])


def test_usage_by_tenant_shows_a_bar_per_tenant_and_its_budgets(fake_server: FakeServer) -> None:
    rows = [
        _usage_row("acme", "gpt-x", 600_000, 150_000, 1_500_000),
        _usage_row("acme", "local", 100_000, 50_000, 500_000),
        _usage_row("globex", "gpt-x", 50_000, 10_000, 1_000_000),
        _usage_row("initech", "local", 10, 5, 0),
    ]
    fake_server.answer("GET", "/v1/usage", _bill(rows, ["tenant", "model"]))
    budgets = [
        _budget("cost", 5_000_000, 2_000_000),
        _budget("tokens", 1_000_000, 900_000) | {"period": "day"},
        _budget("cost", 500_000, 1_000_000) | {"tenant": "globex", "period": "total"},
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
    rows = [_usage_row("acme", "local", 30, 0, 0), _usage_row("globex", "local", 10, 0, 0)]
    fake_server.answer("GET", "/v1/usage", _bill(rows, ["tenant"]))
    fake_server.answer("GET", "/admin/budgets", {"object": "list", "data": []})
    result = run("usage", "--group-by", "tenant")
    assert result.exit_code == 0, result.output
    assert "share of tokens" in result.stdout
    assert "75.0%" in _bill_line(result.stdout, "acme")
    assert "25.0%" in _bill_line(result.stdout, "globex")


@pytest.mark.parametrize("status", [403, 404])
def test_usage_leaves_budgets_out_when_they_cannot_be_read(fake_server: FakeServer, status: int) -> None:
    fake_server.answer("GET", "/v1/usage", _bill([_usage_row("acme", "m", 10, 5, 1_000)], ["tenant"]))
    refusal = {"error": {"message": "This endpoint needs the admin key.", "type": "invalid_request_error"}}
    fake_server.answer("GET", "/admin/budgets", refusal, status=status)
    result = run("usage", "--group-by", "tenant")
    assert result.exit_code == 0, result.output
    assert "budget" not in result.stdout
    assert _bill_line(result.stdout, "acme").split()[:3] == ["acme", "0.001", "15"]
    assert result.stderr == ""


def test_usage_fails_when_budgets_fail_otherwise(fake_server: FakeServer) -> None:
    fake_server.answer("GET", "/v1/usage", _bill([_usage_row("acme", "m", 10, 5, 1_000)], ["tenant"]))
    broken = {"error": {"message": "The database is gone.", "type": "api_error"}}
    fake_server.answer("GET", "/admin/budgets", broken, status=500)
    result = run("usage")
    assert result.exit_code == 1
    assert "error: The database is gone." in result.stderr


def test_usage_json_and_other_groupings_have_no_bill(fake_server: FakeServer) -> None:
    by_model = _bill([_usage_row("acme", "m", 10, 5, 1_000)], ["model"])
    fake_server.answer("GET", "/v1/usage", by_model)
    table = run("usage", "--group-by", "model")
    assert table.exit_code == 0, table.output
    assert "bill per tenant" not in table.stdout
    assert [r.url.path for r in fake_server.requests] == ["/v1/usage"]
    by_tenant = _bill([_usage_row("acme", "m", 10, 5, 1_000)], ["tenant"])
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
