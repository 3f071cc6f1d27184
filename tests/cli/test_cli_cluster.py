"""`aigrid cluster`: the nodes as a table (live ones first), as JSON, and the server's refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.cli.conftest import URL, FakeServer, run

pytestmark = pytest.mark.usefixtures("environment")


def _node(name: str, epoch: int, live: bool, **extra: Any) -> dict[str, Any]:
    return {
        "id": epoch,
        "name": name,
        "epoch": epoch,
        "live": live,
        "started_at_us": 1,
        "lease_until_us": 2,
        "lease_left_s": 12.5 if live else -30.0,
        "heartbeat_age_s": 2.5 if live else 45.0,
        "address": f"http://{name}:8700",
        "load": {"requests_in_flight": 3, "pid": 7},
        "self": False,
        **extra,
    }


ANSWER = {
    "object": "list",
    "data": [_node("gw-1", 1, False), _node("gw-2", 4, True, self=True), _node("gw-3", 2, True)],
    "node": "gw-2",
    "live": True,
    "lease_s": 15.0,
    "renew_s": 5.0,
}


def test_cluster_lists_live_nodes_first_with_their_leases(fake_server: FakeServer) -> None:
    fake_server.answer("GET", "/admin/cluster", ANSWER)
    result = run("cluster")
    assert result.exit_code == 0, result.output
    assert fake_server.last.url == f"{URL}/admin/cluster"
    lines = [line for line in result.stdout.splitlines() if "gw-" in line]
    assert [line.split()[0] for line in lines] == ["gw-2", "gw-3", "gw-1"]
    assert "(this one)" in lines[0] and "12.5 s" in lines[0] and "3 in flight" in lines[0]
    assert "ended" in lines[2] and "45.0 s ago" in lines[2]
    assert "2 of 3 node(s) live; leases of 15 s" in result.stdout


def test_cluster_json_is_the_api_answer(fake_server: FakeServer) -> None:
    fake_server.answer("GET", "/admin/cluster", ANSWER)
    result = run("cluster", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == ANSWER


def test_cluster_with_a_tenant_key_says_why_and_fails(fake_server: FakeServer) -> None:
    refusal = {"error": {"message": "This needs the admin key.", "type": "permission_error"}}
    fake_server.answer("GET", "/admin/cluster", refusal, status=403)
    result = run("cluster")
    assert result.exit_code == 1
    assert "This needs the admin key." in result.output
