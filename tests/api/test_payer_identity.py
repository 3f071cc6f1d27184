"""Payer identity on a live server with the example services: a tenant pays as, and asks a shared
wallet service about, only the users it acts for."""

from __future__ import annotations

from typing import Any

import pytest
from tests.api.test_entry_api import balance, call
from tests.api.test_tools_api import tool_call, wait_state
from tests.examples.test_services import Service
from tests.support import LiveServer, RecordingUpstream, aigrid

pytestmark = pytest.mark.slow

SERVER_CONFIG = '[kernel]\nplanner_model = "mock"\n'


def users(server: LiveServer, tenant: str) -> list[str]:
    listed = server.admin("GET", f"/admin/tenants/{tenant}/users")
    assert listed.status_code == 200, listed.text
    return [u["user"] for u in listed.json()["data"]]


def test_the_admin_says_which_users_a_tenant_acts_for(server: LiveServer) -> None:
    key = server.new_tenant_key("wallets")
    assert users(server, "wallets") == []
    assert server.admin("PUT", "/admin/tenants/wallets/users/carol").status_code == 201
    assert server.admin("PUT", "/admin/tenants/wallets/users/carol").status_code == 200, "once is enough"
    added = aigrid(server, "tenant", "users", "add", "wallets", "alice")
    assert added.returncode == 0 and "acts for alice" in added.stdout, added.stderr
    assert users(server, "wallets") == ["alice", "carol"]
    listed = aigrid(server, "tenant", "users", "list", "wallets")
    assert listed.stdout.split() == ["alice", "carol"]

    removed = aigrid(server, "tenant", "users", "remove", "wallets", "carol")
    assert removed.returncode == 0, removed.stderr
    assert users(server, "wallets") == ["alice"]
    again = server.admin("DELETE", "/admin/tenants/wallets/users/carol")
    assert again.status_code == 404 and "does not act for a user named 'carol'" in again.text
    gone = aigrid(server, "tenant", "users", "remove", "wallets", "carol")
    assert gone.returncode != 0 and "carol" in gone.stderr and "Traceback" not in gone.stderr

    unknown = server.admin("PUT", "/admin/tenants/nobody/users/alice")
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == "No tenant named 'nobody'."
    bad = server.admin("PUT", "/admin/tenants/wallets/users/bob%3B%20drop")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    refused = call(server, key, "PUT", "/admin/tenants/wallets/users/bob")
    assert refused.status_code in (401, 403), "only the admin changes whom a tenant acts for"
    assert users(server, "wallets") == ["alice"]


def test_an_entry_pays_only_as_a_user_its_tenant_acts_for(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service]
) -> None:
    key = server.new_tenant_key("alices-shop", users=("alice",))
    before = balance(services, "bob")
    refused = call(server, key, "POST", "/v1/entry", json={"input": "buy a cast iron pan", "user": "bob"})
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["type"] == "permission_error"
    assert "does not act for user 'bob'" in error["message"]
    assert "aigrid tenant users add alices-shop bob" in error["message"], "it says how to allow it"
    assert call(server, key, "GET", "/v1/entry").json()["data"] == [], "no entry was made"
    assert balance(services, "bob") == before


def test_the_entry_model_binds_its_user_field_the_same_way(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service]
) -> None:
    key = server.new_tenant_key("chat-shop", users=("alice",))
    refused = call(
        server,
        key,
        "POST",
        "/v1/chat/completions",
        json={"model": "entry", "messages": [{"role": "user", "content": "buy a pan"}], "user": "carol"},
    )
    assert refused.status_code == 403, refused.text
    assert "does not act for user 'carol'" in refused.json()["error"]["message"]


def test_an_agent_asks_the_shared_wallet_only_about_its_tenants_users(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service]
) -> None:
    key = server.new_tenant_key("agent-shop", users=("alice",))
    spec: dict[str, Any] = {
        "name": "purse",
        "instructions": "Read wallets.",
        "model": "mock",
        "tools": ["payment.balance"],
    }
    assert call(server, key, "POST", "/v1/agents", json=spec).status_code == 201

    for user, seen in (("bob", False), ("alice", True)):
        upstream.script[:] = [
            tool_call("payment__balance", {"user": user}),
            {"role": "assistant", "content": "Read."},
        ]
        pid = call(server, key, "POST", "/v1/processes", json={"agent": "purse", "input": user}).json()["pid"]
        wait_state(server, key, pid, ("done", "failed"))
        answered = upstream.requests[-1]["messages"][-1]
        assert answered["role"] == "tool"
        if seen:
            assert "balance_cents" in answered["content"], answered
        else:
            assert answered["content"].startswith("refused: Tenant 'agent-shop' does not act for user 'bob'")
            assert "balance_cents" not in answered["content"]
        (audited,) = call(server, key, "GET", "/v1/audit", params={"pid": pid}).json()["data"]
        assert audited["outcome"] == ("ok" if seen else "refused")
