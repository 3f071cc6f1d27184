"""Tools on a live server: an MCP server from the config, approvals across a restart, the audit log,
providers added and removed with the CLI, memory and the inbox, each tenant seeing its own."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.kernel.oauth_server import OAuthProtectedMcpServer, Running
from tests.kernel.test_mcp import TOKEN, HttpMcp, gated_app
from tests.support import LiveServer, RecordingUpstream, aigrid, free_port

pytestmark = pytest.mark.slow

STDIO_SERVER = Path(__file__).parent.parent / "kernel" / "mcp_stdio_server.py"


SERVER_CONFIG = (
    f'[[tools]]\nname = "calc"\nkind = "mcp"\ncommand = {json.dumps([sys.executable, str(STDIO_SERVER)])}\n'
)


def api(server: LiveServer, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, server.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs
    )


def wait_state(server: LiveServer, key: str, pid: str, states: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        process: dict[str, Any] = api(server, key, "GET", f"/v1/processes/{pid}").json()
        if process["state"] in states:
            return process
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never reached {states}")


def tool_call(name: str, arguments: dict[str, Any], call_id: str = "c1") -> dict[str, Any]:
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": function}],
    }


def test_an_approved_mcp_call_survives_a_restart_and_lands_in_the_audit_log(
    server: LiveServer, upstream: RecordingUpstream
) -> None:
    key = server.new_tenant_key("acme")
    other = server.new_tenant_key("globex")
    spec = {
        "name": "adder",
        "instructions": "Add.",
        "model": "mock",
        "tools": ["calc.*"],
        "approval": ["calc.add"],
    }
    assert api(server, key, "POST", "/v1/agents", json=spec).status_code == 201
    listed = {t["name"]: t for t in api(server, key, "GET", "/v1/tools").json()["data"]}
    assert listed["calc.add"]["provider"] == "calc" and listed["calc.add"]["called_as"] == "calc__add"

    upstream.script[:] = [
        tool_call("calc__add", {"a": 2, "b": 3}),
        {"role": "assistant", "content": "It is 5."},
    ]
    pid = api(server, key, "POST", "/v1/processes", json={"agent": "adder", "input": "2+3?"}).json()["pid"]
    waiting = wait_state(server, key, pid, ("waiting_approval",))
    assert waiting["reason"] == "approval: calc.add"
    assert api(server, other, "GET", "/v1/approvals").json()["data"] == [], "another tenant sees no approval"

    server.stop()
    server.start()  # the approval waits in the database, not in the server
    (approval,) = api(server, key, "GET", "/v1/approvals").json()["data"]
    assert (approval["tool"], approval["pid"]) == ("calc.add", pid)
    assert api(server, other, "POST", f"/v1/approvals/{approval['id']}/approve").status_code == 404
    assert api(server, key, "POST", f"/v1/approvals/{approval['id']}/approve").status_code == 200
    done = wait_state(server, key, pid, ("done", "failed"))
    assert done["result"] == "It is 5.", done
    tool_message = upstream.requests[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and json.loads(tool_message["content"]) == {"result": 5}

    (audited,) = api(server, key, "GET", "/v1/audit", params={"pid": pid}).json()["data"]
    assert (audited["tool"], audited["outcome"]) == ("calc.add", "ok")
    assert api(server, other, "GET", "/v1/audit").json()["data"] == []
    shown = aigrid(server, "audit", "--tenant", "acme")
    assert shown.returncode == 0 and "calc.add" in shown.stdout
    top = aigrid(server, "top", "--once", "--tenant", "acme")
    assert top.returncode == 0 and pid in top.stdout and "done" in top.stdout


def test_providers_are_added_listed_and_removed_by_the_admin_only(server: LiveServer) -> None:
    spec = Path(__file__).parent.parent / "kernel" / "petstore.yaml"
    added = aigrid(server, "tool", "add", "pets", "--openapi", str(spec), "--base-url", "http://127.0.0.1:9")
    assert added.returncode == 0, added.stderr
    assert "pets." in added.stdout
    providers = aigrid(server, "tool", "providers", "--json")
    by_name = {p["name"]: p for p in json.loads(providers.stdout)["data"]}
    assert by_name["calc"]["origin"] == "config" and by_name["pets"]["origin"] == "runtime"
    tools = [t["name"] for t in json.loads(aigrid(server, "tool", "list", "--json").stdout)["data"]]
    assert any(name.startswith("pets.") for name in tools)

    server.stop()
    server.start()
    again = {p["name"] for p in server.admin("GET", "/admin/tools/providers").json()["data"]}
    assert "pets" in again, "a provider added at run time is opened again at start"

    twice = aigrid(server, "tool", "add", "pets", "--openapi", str(spec), "--base-url", "http://127.0.0.1:9")
    assert twice.returncode != 0 and "exists already" in twice.stderr
    missing = aigrid(server, "tool", "add", "ghost", "--command", "/no/such/mcp-server")
    assert missing.returncode != 0 and "ghost" in missing.stderr and "Traceback" not in missing.stderr
    both = aigrid(server, "tool", "add", "x", "--url", "http://a", "--openapi", "b.yaml")
    assert both.returncode == 2 and "exactly one" in both.stderr
    assert aigrid(server, "tool", "rm", "calc").returncode != 0, "the config file's provider stays"
    assert aigrid(server, "tool", "rm", "pets").returncode == 0
    assert aigrid(server, "tool", "rm", "pets").returncode != 0

    key = server.new_tenant_key("initech")
    body = {"name": "evil", "kind": "mcp", "command": ["sh", "-c", "touch /tmp/owned"]}
    assert api(server, key, "POST", "/admin/tools/providers", json=body).status_code in (401, 403)
    bad = server.admin("POST", "/admin/tools/providers", json={"name": "Bad Name", "kind": "mcp"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "name"


def test_an_mcp_url_that_wants_a_token_is_explained_and_then_added_with_a_header(server: LiveServer) -> None:
    port = free_port()
    gated = HttpMcp(port, gated_app(port))
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        refused = server.admin(
            "POST", "/admin/tools/providers", json={"name": "locked", "kind": "mcp", "url": url}
        )
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert f"could not connect to {url}: the server answered 401 Unauthorized" in error["message"]
        assert "--header 'Authorization: Bearer TOKEN'" in error["message"]
        manifest = {"category": "misc", "description": "Says who calls.", "operations": {"whoami": {}}}
        service = {"name": "locked", "kind": "mcp", "url": url, "manifest": manifest}
        refused = server.admin("POST", "/admin/services", json=service)
        assert refused.status_code == 400 and "401 Unauthorized" in refused.json()["error"]["message"]

        cli = aigrid(server, "tool", "add", "locked", "--url", url)
        assert cli.returncode == 1 and "Traceback" not in cli.stderr
        assert "the server answered 401 Unauthorized: it wants authorization" in cli.stderr
        assert "--header 'Authorization: Bearer TOKEN'" in cli.stderr
        added = aigrid(
            server, "tool", "add", "locked", "--url", url, "--header", f"Authorization: Bearer {TOKEN}"
        )
        assert added.returncode == 0, added.stderr
        assert "locked.whoami" in added.stdout
        assert aigrid(server, "tool", "rm", "locked").returncode == 0
    finally:
        gated.stop()


@pytest.mark.parametrize(
    ("oauth", "extra", "param", "says"),
    [
        ({"client_secret": "x"}, {}, "oauth", "a client_secret needs its client_id"),
        ({"client_id": "a", "colour": "red"}, {}, "oauth.colour", "Extra inputs are not permitted"),
        ({"issuer": "ftp://auth"}, {}, "oauth.issuer", "String should match pattern"),
        ({"client_id": 5}, {}, "oauth.client_id", "valid string"),
        ({}, {"headers": {"Authorization": "Bearer t"}}, None, "cannot both be given"),
        ({}, {"url": None, "command": ["srv"]}, None, "over streamable HTTP"),
        ({}, {"kind": "openapi", "url": None, "spec": "a.yaml"}, None, "over streamable HTTP"),
    ],
)
def test_a_bad_oauth_section_is_a_400(
    server: LiveServer, oauth: dict[str, Any], extra: dict[str, Any], param: str | None, says: str
) -> None:
    body = {"name": "vault", "kind": "mcp", "url": "http://127.0.0.1:9/mcp", "oauth": oauth, **extra}
    refused = server.admin(
        "POST", "/admin/tools/providers", json={k: v for k, v in body.items() if v is not None}
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and says in error["message"]
    if param is not None:
        assert error["param"] == param


def test_an_oauth_provider_is_added_authorised_kept_and_its_secrets_never_shown(server: LiveServer) -> None:
    secret = "s3cret-never-shown"
    double = OAuthProtectedMcpServer(free_port(), clients={"aigrid": secret})
    running = Running(double)
    try:
        body = {
            "name": "vault",
            "kind": "mcp",
            "url": double.url,
            "oauth": {"client_id": "aigrid", "client_secret": "wrong-secret", "scope": "tools"},
        }
        refused = server.admin("POST", "/admin/tools/providers", json=body)
        assert refused.status_code == 400
        message = refused.json()["error"]["message"]
        assert "the server answered 401 Unauthorized: it wants authorization" in message
        assert "check the oauth client_id and client_secret" in message
        assert "wrong-secret" not in message
        assert double.grants == ["client_credentials"]  # the one the wrong secret asked for

        added = aigrid(
            server,
            "tool",
            "add",
            "vault",
            "--url",
            double.url,
            "--oauth-client-id",
            "aigrid",
            "--oauth-scope",
            "tools",
            "--json",
            env={"AIGRID_OAUTH_CLIENT_SECRET": secret},
        )
        assert added.returncode == 0, added.stderr
        shown = json.loads(added.stdout)
        assert shown["auth"]["type"] == "oauth" and shown["auth"]["authorised"] is True
        assert shown["config"]["oauth"]["client_secret"] == "***"
        assert double.grants == ["client_credentials"] * 2

        listing = server.admin("GET", "/admin/tools/providers")
        (vault,) = [p for p in listing.json()["data"] if p["name"] == "vault"]
        assert vault["state"] == "up" and vault["tools"] == ["vault.add", "vault.whoami"]
        auth = vault["auth"]
        assert (auth["client"], auth["client_id"], auth["scope"]) == ("given", "aigrid", "tools")
        assert auth["issuer"].rstrip("/") == double.base and auth["expires_at"] > time.time()
        table = aigrid(server, "tool", "providers")
        assert table.returncode == 0 and "oauth (given client, token" in table.stdout

        server.stop()
        server.start()  # the client secret and the token come back from the database
        again = {p["name"]: p for p in server.admin("GET", "/admin/tools/providers").json()["data"]}
        assert again["vault"]["state"] == "up" and again["vault"]["auth"]["authorised"] is True
        assert double.grants == ["client_credentials"] * 2, "the kept token was used again"
        everything = listing.text + table.stdout + added.stdout + json.dumps(again) + server.log()
        assert secret not in everything
        assert all(token not in everything for token in double.tokens)

        assert aigrid(server, "tool", "rm", "vault").returncode == 0
        registered = aigrid(server, "tool", "add", "vault", "--url", double.url, "--oauth", "--json")
        assert registered.returncode == 0, registered.stderr
        assert json.loads(registered.stdout)["auth"]["client"] == "registered"
        assert len(double.registered) == 1
        assert aigrid(server, "tool", "rm", "vault").returncode == 0
    finally:
        running.stop()


def test_an_admin_logs_in_with_the_cli_for_an_authorization_code_provider(server: LiveServer) -> None:
    double = OAuthProtectedMcpServer(free_port(), clients={"aigrid": "login-secret"})
    running = Running(double)
    try:
        added = aigrid(
            server,
            "tool",
            "add",
            "notes",
            "--url",
            double.url,
            "--oauth-login",
            "--oauth-client-id",
            "aigrid",
            "--oauth-client-secret",
            "login-secret",
        )
        assert added.returncode == 0, added.stderr
        assert "kept, but down" in added.stdout and "run `aigrid tool login notes`" in added.stdout

        early = server.admin(
            "POST", "/admin/tools/providers/notes/login/callback", json={"redirect_url": "x"}
        )
        assert early.status_code == 409
        started = aigrid(server, "tool", "login", "notes", "--start", "--json")
        assert started.returncode == 0, started.stderr
        url = json.loads(started.stdout)["authorization_url"]
        assert url.startswith(f"{double.base}/authorize?")
        bad = server.admin("POST", "/admin/tools/providers/notes/login/callback", json={"redirect_url": 5})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "redirect_url"
        sent_back = httpx.get(url).headers["location"]
        finished = aigrid(server, "tool", "login", "notes", "--finish", sent_back)
        assert finished.returncode == 0, finished.stderr
        assert "Tool provider notes is up with 2 tool(s)" in finished.stdout

        (notes,) = [
            p for p in server.admin("GET", "/admin/tools/providers").json()["data"] if p["name"] == "notes"
        ]
        assert notes["state"] == "up" and notes["auth"]["grant"] == "authorization_code"
        assert notes["auth"]["authorised"] is True
        assert double.grants == ["authorization_code"]
        wrong = aigrid(server, "tool", "login", "vault-none")
        assert wrong.returncode != 0 and "No tool provider named 'vault-none'" in wrong.stderr
        assert aigrid(server, "tool", "rm", "notes").returncode == 0
    finally:
        running.stop()


def test_memory_and_the_inbox_are_each_tenants_own(server: LiveServer, upstream: RecordingUpstream) -> None:
    key = server.new_tenant_key("umbrella")
    other = server.new_tenant_key("cyberdyne")
    made = api(server, key, "POST", "/v1/memory", json={"text": "The vault code is 1234", "key": "vault"})
    assert made.status_code == 201
    found = api(server, key, "GET", "/v1/memory", params={"q": "vault code"}).json()["data"]
    assert [m["text"] for m in found] == ["The vault code is 1234"]
    assert api(server, other, "GET", "/v1/memory", params={"q": "vault"}).json()["data"] == []
    assert api(server, other, "DELETE", f"/v1/memory/{made.json()['id']}").status_code == 404
    assert api(server, key, "POST", "/v1/memory", json={"text": 5}).status_code == 400

    spec = {"name": "reporter", "instructions": "Report.", "model": "mock", "tools": ["notify.owner"]}
    assert api(server, key, "POST", "/v1/agents", json=spec).status_code == 201
    upstream.script[:] = [
        tool_call("memory__search", {"query": "vault"}),
        tool_call("notify__owner", {"text": "found the vault code"}, "c2"),
        {"role": "assistant", "content": "reported"},
    ]
    pid = api(server, key, "POST", "/v1/processes", json={"agent": "reporter", "input": "go"}).json()["pid"]
    assert wait_state(server, key, pid, ("done", "failed"))["result"] == "reported"
    searched = upstream.requests[-2]["messages"][-1]["content"]
    assert "1234" in searched, "the agent found the tenant's shared memory"
    (note,) = api(server, key, "GET", "/v1/inbox").json()["data"]
    assert (note["text"], note["pid"], note["kind"]) == ("found the vault code", pid, "note")
    assert api(server, other, "GET", "/v1/inbox").json()["data"] == []
    listed = aigrid(server, "inbox", "--tenant", "umbrella")
    assert listed.returncode == 0 and "found the vault code" in listed.stdout
