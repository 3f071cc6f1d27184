"""/v1/agents on a live server: versions, validation errors in the OpenAI shape, tenants kept apart."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from tests.support import LiveServer, mock_config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("agents"), mock_config("http://127.0.0.1:9")).start()
    yield srv
    srv.stop()


def call(server: LiveServer, key: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(
        method,
        server.url + path,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        **kwargs,  # type: ignore[arg-type]
    )


SPEC = {"name": "shopper", "instructions": "Buy the cheapest item.", "tools": ["shop.*"]}


def test_a_tenant_stores_versions_of_its_agent(server: LiveServer) -> None:
    key = server.new_tenant_key("acme")
    created = call(server, key, "POST", "/v1/agents", json=SPEC)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.json()["tenant"] == "acme"
    assert call(server, key, "POST", "/v1/agents", json=SPEC).status_code == 200, "unchanged: no new version"
    changed = call(server, key, "POST", "/v1/agents", json={**SPEC, "max_steps": 5})
    assert changed.status_code == 201 and changed.json()["version"] == 2
    newest = call(server, key, "GET", "/v1/agents/shopper").json()
    assert newest["version"] == 2 and newest["spec"]["max_steps"] == 5
    first = call(server, key, "GET", "/v1/agents/shopper", params={"version": 1}).json()
    assert first["spec"]["max_steps"] == 20
    versions = call(server, key, "GET", "/v1/agents/shopper/versions").json()["data"]
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["diff"] is None, "the first version has nothing to differ from"
    assert versions[1]["diff"].startswith("--- v1\n+++ v2\n")
    assert "-max_steps: 20\n+max_steps: 5\n" in versions[1]["diff"]
    listed = call(server, key, "GET", "/v1/agents").json()["data"]
    assert [(a["name"], a["version"]) for a in listed] == [("shopper", 2)]


def test_tenants_do_not_see_each_others_agents(server: LiveServer) -> None:
    ours, theirs = server.new_tenant_key("initech"), server.new_tenant_key("globex")
    assert call(server, ours, "POST", "/v1/agents", json={**SPEC, "name": "secret"}).status_code == 201
    missing = call(server, theirs, "GET", "/v1/agents/secret")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert call(server, theirs, "GET", "/v1/agents").json()["data"] == []
    refused = call(server, theirs, "GET", "/v1/agents", params={"tenant": "initech"})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    admin = server.admin("GET", "/v1/agents", params={"tenant": "initech"}).json()["data"]
    assert [a["name"] for a in admin] == ["secret"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**SPEC, "name": "Bad Name"}, "name"),
        ({**SPEC, "tools": ["shop search"]}, "tools"),
        ({**SPEC, "budget": {"period": "week", "tokens": 10}}, "budget.period"),
        ({**SPEC, "colour": "blue"}, "colour"),
        ({"name": "x"}, "instructions"),
    ],
)
def test_bad_specs_are_400_naming_the_field(server: LiveServer, body: dict[str, object], param: str) -> None:
    key = server.new_tenant_key(f"t-{param.replace('.', '-')}")
    answer = call(server, key, "POST", "/v1/agents", json=body)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text


def test_malformed_bodies_and_missing_keys(server: LiveServer) -> None:
    key = server.new_tenant_key("umbrella")
    not_json = call(server, key, "POST", "/v1/agents", content=b"{nope")
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    assert call(server, key, "POST", "/v1/agents", json=[1, 2]).status_code == 400
    assert call(server, key, "GET", "/v1/agents/shopper", params={"version": "x"}).status_code == 400
    assert httpx.get(server.url + "/v1/agents", timeout=10).status_code == 401
    no_tenant = server.admin("POST", "/v1/agents", json=SPEC)
    assert no_tenant.status_code == 400 and no_tenant.json()["error"]["param"] == "tenant"
    assert server.admin("POST", "/v1/agents", json={**SPEC, "tenant": "umbrella"}).status_code == 201


def test_an_agents_timed_triggers_say_when_they_fire_next(server: LiveServer) -> None:
    key = server.new_tenant_key("hooli")
    daily = {"kind": "cron", "cron": "0 8 * * *", "timezone": "UTC"}
    spec = {**SPEC, "name": "morning", "triggers": [{"kind": "webhook"}, daily]}
    assert call(server, key, "POST", "/v1/agents", json=spec).status_code == 201
    triggers = call(server, key, "GET", "/v1/agents/morning/triggers").json()["data"]
    assert [(t["position"], t["trigger"]["cron"]) for t in triggers] == [(1, "0 8 * * *")]
    next_at = triggers[0]["next_at"]
    assert next_at % 86_400 == 8 * 3600 and 0 < next_at - time.time() <= 86_400
    assert triggers[0]["fired"] == 0 and triggers[0]["last_fired_at"] is None
    assert call(server, key, "GET", "/v1/agents/nobody/triggers").status_code == 404
    unnamed = server.admin("GET", "/v1/agents/morning/triggers")
    assert unnamed.status_code == 400 and unnamed.json()["error"]["param"] == "tenant"
    admin = server.admin("GET", "/v1/agents/morning/triggers", params={"tenant": "hooli"}).json()["data"]
    assert admin == triggers
