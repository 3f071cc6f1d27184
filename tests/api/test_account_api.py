"""What any key may ask of its own account on a live server: who it is, its budgets, the grid's speed."""

from __future__ import annotations

import pytest
from tests.api.test_tools_api import api
from tests.support import ADMIN_KEY, LiveServer

pytestmark = pytest.mark.slow


def test_a_key_learns_whose_it_is(server: LiveServer) -> None:
    key = server.new_tenant_key("acme", users=("bob", "alice"))
    assert api(server, key, "GET", "/v1/me").json() == {
        "object": "principal",
        "tenant": "acme",
        "key_id": server.admin("GET", "/admin/keys", params={"tenant": "acme"}).json()["data"][0]["id"],
        "admin": False,
        "users": ["alice", "bob"],
    }
    assert api(server, ADMIN_KEY, "GET", "/v1/me").json() == {
        "object": "principal",
        "tenant": None,
        "key_id": None,
        "admin": True,
        "users": None,
    }
    stranger = api(server, "sk-nobody", "GET", "/v1/me")
    assert stranger.status_code == 401 and stranger.json()["error"]["type"] == "authentication_error"


def test_a_tenant_sees_its_own_budgets_and_the_admin_sees_all(server: LiveServer) -> None:
    ours, theirs = server.new_tenant_key("initech"), server.new_tenant_key("globex")
    for tenant, tokens in (("initech", 100_000), ("globex", 200_000)):
        body = {"tenant": tenant, "period": "day", "tokens": tokens}
        assert server.admin("PUT", "/admin/budgets", json=body).status_code == 200
    server.openai(ours).chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])

    mine = api(server, ours, "GET", "/v1/budgets").json()["data"]
    assert [(b["tenant"], b["limit"], b["spent"]) for b in mine] == [("initech", 100_000, 12)]
    assert mine == server.admin("GET", "/admin/budgets", params={"tenant": "initech"}).json()["data"]
    assert api(server, theirs, "GET", "/v1/budgets").json()["data"][0]["spent"] == 0
    everyone = {b["tenant"] for b in api(server, ADMIN_KEY, "GET", "/v1/budgets").json()["data"]}
    assert {"initech", "globex"} <= everyone
    one = api(server, ADMIN_KEY, "GET", "/v1/budgets", params={"tenant": "globex"}).json()["data"]
    assert [b["tenant"] for b in one] == ["globex"]

    refused = api(server, ours, "GET", "/v1/budgets", params={"tenant": "globex"})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    unknown = api(server, ADMIN_KEY, "GET", "/v1/budgets", params={"tenant": "nobody"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "tenant"


def test_deployments_report_their_latency_and_speed_once_they_have_served(server: LiveServer) -> None:
    server.openai().chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
    (deployment,) = server.admin("GET", "/admin/deployments").json()["data"]
    assert deployment["latency_s"] > 0
    assert deployment["tokens_per_s"] == pytest.approx(1 / deployment["seconds_per_output_token"], rel=0.01)
