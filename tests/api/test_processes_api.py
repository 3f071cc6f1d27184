"""/v1/processes on a live server: run an agent to its answer, read its journal, signal it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.support import LiveServer, mock_config

pytestmark = pytest.mark.slow

AGENT = {"name": "writer", "instructions": "Write one line.", "model": "mock"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mock_upstream: str) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("processes"), mock_config(mock_upstream)).start()
    yield srv
    srv.stop()


def call(server: LiveServer, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)


def finished(server: LiveServer, key: str, pid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        process: dict[str, Any] = call(server, key, "GET", f"/v1/processes/{pid}").json()
        if process["state"] in ("done", "failed", "killed"):
            return process
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not finish")


def test_an_agent_runs_to_its_answer_metered_to_its_process(server: LiveServer) -> None:
    key = server.new_tenant_key("acme")
    assert call(server, key, "POST", "/v1/agents", json=AGENT).status_code == 201
    started = call(server, key, "POST", "/v1/processes", json={"agent": "writer", "input": "a haiku"})
    assert started.status_code == 201, started.text
    pid = started.json()["pid"]
    process = finished(server, key, pid)
    assert process["state"] == "done" and process["result"]
    assert process["usage"]["prompt_tokens"] > 0 and process["usage"]["cost_micro"] > 0
    steps = call(server, key, "GET", f"/v1/processes/{pid}/journal").json()["data"]
    assert [s["kind"] for s in steps] == ["model_request", "model_response"]
    usage = call(server, key, "GET", "/v1/usage", params={"group_by": "agent"}).json()
    assert [row["agent"] for row in usage["data"]] == ["writer"]
    listed = call(server, key, "GET", "/v1/processes", params={"state": "done"}).json()["data"]
    assert [p["pid"] for p in listed] == [pid]
    by_agent = call(server, key, "GET", "/v1/processes", params={"agent": "writer"}).json()["data"]
    assert [p["pid"] for p in by_agent] == [pid]
    assert call(server, key, "GET", "/v1/processes", params={"agent": "reader"}).json()["data"] == []
    answer = steps[1]["usage"]
    assert answer["prompt_tokens"] == process["usage"]["prompt_tokens"], "the journal says what a call used"
    assert answer["cost_micro"] == process["usage"]["cost_micro"]
    ended = call(server, key, "POST", f"/v1/processes/{pid}/kill")
    assert ended.status_code == 409 and ended.json()["error"]["code"] == "conflict"


def test_processes_are_private_to_their_tenant(server: LiveServer) -> None:
    ours, theirs = server.new_tenant_key("initech"), server.new_tenant_key("globex")
    call(server, ours, "POST", "/v1/agents", json=AGENT)
    pid = call(server, ours, "POST", "/v1/processes", json={"agent": "writer", "input": "x"}).json()["pid"]
    for method, path in (
        ("GET", f"/v1/processes/{pid}"),
        ("GET", f"/v1/processes/{pid}/journal"),
        ("POST", f"/v1/processes/{pid}/kill"),
    ):
        answer = call(server, theirs, method, path)
        assert answer.status_code == 404, (method, path, answer.text)
    assert call(server, theirs, "GET", "/v1/processes").json()["data"] == []
    assert server.admin("GET", f"/v1/processes/{pid}").status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "agent"),
        ({"agent": "writer"}, "input"),
        ({"agent": "writer", "input": "   "}, "input"),
        ({"agent": "writer", "input": "x", "tenant": 5}, "tenant"),
    ],
)
def test_bad_starts_name_the_field(server: LiveServer, body: dict[str, Any], param: str) -> None:
    key = server.new_tenant_key(f"bad-{param}-{len(body)}-{len(str(body))}")
    answer = call(server, key, "POST", "/v1/processes", json=body)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param


def test_unknown_agents_states_and_signals(server: LiveServer) -> None:
    key = server.new_tenant_key("umbrella")
    missing = call(server, key, "POST", "/v1/processes", json={"agent": "nobody", "input": "x"})
    assert missing.status_code == 404 and "No agent named 'nobody'" in missing.json()["error"]["message"]
    assert call(server, key, "GET", "/v1/processes", params={"state": "asleep"}).status_code == 400
    assert call(server, key, "GET", "/v1/processes", params={"limit": "0"}).status_code == 400
    assert call(server, key, "POST", "/v1/processes/p-nope/dance").status_code == 400
    assert call(server, key, "GET", "/v1/processes/p-nope").status_code == 404


def test_the_approvals_inbox_and_its_bad_paths(server: LiveServer) -> None:
    key = server.new_tenant_key("inbox-co")
    inbox = call(server, key, "GET", "/v1/approvals")
    assert inbox.status_code == 200 and inbox.json() == {"object": "list", "data": []}
    unknown = call(server, key, "POST", "/v1/approvals/p-nope:4/approve")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert call(server, key, "POST", "/v1/approvals/p-nope:4/maybe").status_code == 400
    assert call(server, key, "GET", "/v1/approvals", params={"tenant": "acme"}).status_code == 403


@pytest.fixture(scope="module")
def with_process(server: LiveServer) -> tuple[str, str]:
    """A tenant's key and the pid of a process it ran."""
    key = server.new_tenant_key("numbers")
    call(server, key, "POST", "/v1/agents", json=AGENT)
    return key, call(server, key, "POST", "/v1/processes", json={"agent": "writer", "input": "Hi"}).json()[
        "pid"
    ]


@pytest.mark.parametrize(
    ("method", "path", "param"),
    [
        ("DELETE", "/v1/memory/9223372036854775808", "id"),
        ("DELETE", "/v1/memory/" + "9" * 5000, "id"),
        ("GET", "/v1/agents/writer?version=9223372036854775808", "version"),
        ("GET", "/v1/processes/{pid}/journal?after=99999999999999999999999", "after"),
        ("GET", "/v1/usage?since=1e20", "since"),
        ("GET", "/v1/usage?since=1e400", "since"),
        ("GET", "/v1/usage?since=inf", "since"),
        ("GET", "/v1/usage?until=-1e30", "until"),
        ("GET", "/v1/usage?until=nan", "until"),
        ("GET", "/v1/inbox?after=9223372036854775808", "after"),
        ("GET", "/v1/traces/9223372036854775808", "id"),
    ],
)
def test_numbers_too_big_for_the_database_are_a_400_and_the_connection_stays_open(
    server: LiveServer, with_process: tuple[str, str], method: str, path: str, param: str
) -> None:
    key, pid = with_process
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        answer = client.request(method, path.format(pid=pid))
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == param
        assert client.get("/v1/me").status_code == 200, "the same keep-alive connection answers again"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/embeddings", "POST"),
        ("TRACE", "/admin/budgets", "DELETE, GET, PUT"),
        ("PATCH", "/v1/processes", "GET, HEAD, POST"),
    ],
)
def test_a_method_a_route_does_not_take_is_a_405_naming_those_it_does(
    server: LiveServer, with_process: tuple[str, str], method: str, path: str, allowed: str
) -> None:
    answer = call(server, with_process[0], method, path)
    assert answer.status_code == 405 and answer.json()["error"]["code"] == "method_not_allowed"
    assert sorted(answer.headers["Allow"].split(", ")) == allowed.split(", ")
