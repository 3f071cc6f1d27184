"""The aigrid CLI as a user sees it: accounts, keys, budgets, limits, deployments and errors."""

from __future__ import annotations

import functools
import json
import socket
from pathlib import Path

import httpx
import pytest
from tests.cli.conftest import ADMIN_KEY, URL, FakeServer, budget_row, run, usage_row

from aigrid import __version__
from aigrid.cli import client, common

# Every test here talks to the fake server, never a real one.
pytestmark = pytest.mark.usefixtures("environment")


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


def test_budget_set_tokens(fake_server: FakeServer) -> None:
    fake_server.answer("PUT", "/admin/budgets", budget_row("tokens", 1_000_000, 250))
    result = run("budget", "set", "--tenant", "acme", "--tokens", "1000000", "--period", "month")
    assert result.exit_code == 0, result.output
    assert fake_server.last.method == "PUT"
    assert fake_server.last_body() == {"tenant": "acme", "period": "month", "tokens": 1_000_000}
    assert "1,000,000" in result.stdout
    assert "999,750" in result.stdout


def test_budget_set_cost_sends_a_decimal_string_and_shows_cny(fake_server: FakeServer) -> None:
    fake_server.answer("PUT", "/admin/budgets", budget_row("cost", 12_500_000, 1_234))
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
    fake_server.answer("GET", "/admin/budgets", {"object": "list", "data": [budget_row("tokens", 500, 100)]})
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


def test_usage_prints_a_bill_with_a_totals_row(fake_server: FakeServer) -> None:
    rows = [
        usage_row("acme", "gpt-x", 1_200_000, 34_567, 2_500_000),
        usage_row("globex", "local", 10, 5, 0),
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
    row = {"start": "2025-03-01T00:00:00Z", "start_us": 1, **usage_row("acme", "m", 1, 1, 1)}
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
