"""The CLI against a live server, as a person would use it after `make run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI
from tests.support import LiveServer, aigrid, mock_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mock_upstream: str) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("cli"), mock_config(mock_upstream)).start()
    yield srv
    srv.stop()


def test_tenant_key_budget_limits_and_the_bill(server: LiveServer) -> None:
    assert aigrid(server, "tenant", "create", "shop").returncode == 0
    created = aigrid(server, "key", "create", "--tenant", "shop", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    budget = aigrid(
        server, "budget", "set", "--tenant", "shop", "--cost", "1.5", "--period", "month", "--json"
    )
    assert json.loads(budget.stdout)["limit"] == 1_500_000
    limits = aigrid(server, "limits", "set", "--tenant", "shop", "--rpm", "100", "--tpm", "50000", "--json")
    assert json.loads(limits.stdout) == {"tenant": "shop", "rpm": 100, "tpm": 50000}

    client = OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])

    bill = aigrid(server, "usage", "--group-by", "tenant,model", "--json")
    rows = {r["tenant"]: r for r in json.loads(bill.stdout)["data"]}
    assert rows["shop"]["requests"] == 3 and rows["shop"]["total_tokens"] == 84
    table = aigrid(server, "usage")
    assert table.returncode == 0 and "shop" in table.stdout and "84" in table.stdout
    bill = table.stdout.split("bill per tenant", 1)[1]
    shop = next(line for line in bill.splitlines() if line.split()[:1] == ["shop"])
    assert shop.split()[:3] == ["shop", "0.000126", "84"] and "━" in shop
    assert "0.000126 / 1.50 CNY a month" in bill.split("budgets this period", 1)[1]
    spent = json.loads(aigrid(server, "budget", "list", "--tenant", "shop", "--json").stdout)["data"][0]
    assert spent["spent"] == 3 * 42  # 12 x 0.8 + 16 x 2.0 = 41.6 micro-CNY, rounded, per request
    assert "mock" in aigrid(server, "deployments").stdout


def test_a_generated_admin_key_is_stored_printed_and_kept(tmp_path: Path, mock_upstream: str) -> None:
    server = LiveServer(tmp_path, admin_key=False).start()
    try:
        key = (tmp_path / "admin_key").read_text().strip()
        assert key.startswith("sk-aigrid-admin-") and key in server.log()
        assert (tmp_path / "admin_key").stat().st_mode & 0o077 == 0, "only its owner may read the key"
        listed = aigrid(server, "tenant", "list", "--json", key_from_data_dir=True)
        assert listed.returncode == 0 and "admin" in listed.stdout
    finally:
        server.stop()
    server.start()
    try:
        assert (tmp_path / "admin_key").read_text().strip() == key
    finally:
        server.stop()


def test_errors_are_messages_not_tracebacks(server: LiveServer, tmp_path: Path) -> None:
    missing = aigrid(server, "key", "create", "--tenant", "nobody")
    assert missing.returncode == 1 and "No tenant named 'nobody'" in missing.stderr
    assert "Traceback" not in missing.stderr
    both = aigrid(
        server, "budget", "set", "--tenant", "shop", "--tokens", "5", "--cost", "1", "--period", "day"
    )
    assert both.returncode == 2 and "Traceback" not in both.stderr
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[[models]]\nname = 1\n")
    serve = subprocess.run(
        [sys.executable, "-m", "aigrid", "serve", "--config", str(bad_config), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert serve.returncode == 2 and "models.0.name" in serve.stderr and "Traceback" not in serve.stderr


def test_agent_specs_from_files(server: LiveServer, tmp_path: Path) -> None:
    assert aigrid(server, "tenant", "create", "agents-co").returncode == 0
    spec = tmp_path / "shopper.toml"
    spec.write_text('name = "shopper"\ninstructions = "Buy the cheapest."\ntools = ["shop.*"]\n')
    saved = aigrid(server, "agent", "save", str(spec), "--tenant", "agents-co")
    assert saved.returncode == 0 and "version 1" in saved.stdout, saved.stderr
    spec.write_text('name = "shopper"\ninstructions = "Buy the cheapest."\nmax_steps = 4\n')
    assert "version 2" in aigrid(server, "agent", "save", str(spec), "--tenant", "agents-co").stdout
    listed = aigrid(server, "agent", "list", "--tenant", "agents-co")
    assert "shopper" in listed.stdout and "agents-co" in listed.stdout
    shown = json.loads(
        aigrid(server, "agent", "show", "shopper", "--tenant", "agents-co", "--version", "1", "--json").stdout
    )
    assert shown["spec"]["tools"] == ["shop.*"]
    versions = json.loads(
        aigrid(server, "agent", "versions", "shopper", "--tenant", "agents-co", "--json").stdout
    )
    assert [v["version"] for v in versions["data"]] == [1, 2]


def test_bad_agent_files_and_specs_are_clear_errors(server: LiveServer, tmp_path: Path) -> None:
    assert aigrid(server, "tenant", "create", "files-co").returncode == 0
    missing = aigrid(server, "agent", "save", str(tmp_path / "none.json"), "--tenant", "files-co")
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    bad_json = aigrid(server, "agent", "save", str(broken), "--tenant", "files-co")
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"name": "Bad Name", "instructions": "x"}))
    refused = aigrid(server, "agent", "save", str(wrong), "--tenant", "files-co")
    assert refused.returncode == 1 and "name" in refused.stderr and "Traceback" not in refused.stderr
    unknown = aigrid(server, "agent", "show", "nobody", "--tenant", "files-co")
    assert unknown.returncode == 1 and "No agent named 'nobody'" in unknown.stderr


def save_writer(server: LiveServer, tmp_path: Path, tenant: str) -> None:
    """A new tenant with an agent ``writer`` on the mock model, saved through the CLI."""
    assert aigrid(server, "tenant", "create", tenant).returncode == 0
    spec = tmp_path / "writer.json"
    spec.write_text(json.dumps({"name": "writer", "instructions": "Write.", "model": "mock"}))
    assert aigrid(server, "agent", "save", str(spec), "--tenant", tenant).returncode == 0


def test_run_ps_logs_and_signals(server: LiveServer, tmp_path: Path) -> None:
    save_writer(server, tmp_path, "runner-co")
    started = aigrid(server, "run", "writer", "a haiku", "--tenant", "runner-co", "--json")
    assert started.returncode == 0, started.stderr
    pid = json.loads(started.stdout)["pid"]
    for _ in range(200):
        listed = json.loads(aigrid(server, "ps", "--tenant", "runner-co", "--json").stdout)["data"]
        if listed[0]["state"] == "done":
            break
    assert listed[0]["pid"] == pid and listed[0]["state"] == "done"
    table = aigrid(server, "ps", "--tenant", "runner-co")
    assert pid in table.stdout and "writer v1" in table.stdout
    logs = aigrid(server, "logs", pid)
    assert "model_request" in logs.stdout and "model_response" in logs.stdout
    ended = aigrid(server, "kill", pid)
    assert ended.returncode == 1 and "has ended" in ended.stderr and "Traceback" not in ended.stderr
    unknown = aigrid(server, "pause", "p-nope")
    assert unknown.returncode == 1 and "No process p-nope" in unknown.stderr
    assert "approvals" in aigrid(server, "approvals").stdout
    nope = aigrid(server, "approve", "p-nope:3")
    assert nope.returncode == 1 and "No approval p-nope:3" in nope.stderr


def test_a_tenants_key_gets_its_bill_without_budgets(server: LiveServer) -> None:
    key = server.new_tenant_key("viewer")
    client = OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
    env = {**os.environ, "AIGRID_URL": server.url, "AIGRID_ADMIN_KEY": key, "COLUMNS": "200"}
    bill = subprocess.run(
        [sys.executable, "-m", "aigrid", "usage", "--group-by", "tenant"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bill.returncode == 0, bill.stderr
    lines = bill.stdout.split("bill per tenant", 1)[1].splitlines()
    viewer = next(line for line in lines if "viewer" in line)
    assert viewer.split()[:3] == ["viewer", "0.000042", "28"] and "100.0%" in viewer
    assert "budget" not in bill.stdout and bill.stderr == ""


def test_run_waits_for_the_result_and_top_prints_json(server: LiveServer, tmp_path: Path) -> None:
    save_writer(server, tmp_path, "waiter-co")
    shown = aigrid(server, "run", "writer", "a haiku", "--tenant", "waiter-co", "--wait")
    assert shown.returncode == 0, shown.stderr
    assert "(writer v1) is done." in shown.stdout and shown.stderr == ""
    ended = aigrid(server, "run", "writer", "a limerick", "--tenant", "waiter-co", "--wait", "--json")
    assert ended.returncode == 0, ended.stderr
    process = json.loads(ended.stdout)
    assert process["state"] == "done" and process["result"]
    frame = json.loads(aigrid(server, "top", "--json", "--tenant", "waiter-co").stdout)
    assert {p["pid"] for p in frame["data"]} >= {process["pid"]}
    assert all(p["tenant"] == "waiter-co" for p in frame["data"])
