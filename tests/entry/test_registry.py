"""The service registry on a live server: a third party registers a service with a manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.api.test_tools_api import api
from tests.support import ADMIN_KEY, LiveServer, aigrid

from aigrid.entry.manifest import Manifest

pytestmark = pytest.mark.slow

STDIO_SERVER = Path(__file__).parents[1] / "kernel" / "mcp_stdio_server.py"
MANIFEST: dict[str, Any] = {
    "category": "test",
    "description": "Adds numbers and charges once per key.",
    "operations": {"add": {}, "echo": {}, "charge": {"confirm": True, "undo": "echo", "idempotency": True}},
}


def add(tmp_path: Path, server: LiveServer, name: str, manifest: dict[str, Any]) -> Any:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(manifest))
    command = f"{sys.executable} {STDIO_SERVER}"
    return aigrid(server, "service", "add", name, "--mcp", command, "--manifest", str(path))


def test_a_third_party_registers_a_service_and_it_stays_registered(
    server: LiveServer, tmp_path: Path
) -> None:
    added = add(tmp_path, server, "calc", MANIFEST)
    assert added.returncode == 0, added.stderr
    assert "Service calc (test) is registered with 3 operations." in added.stdout
    (service,) = api(server, ADMIN_KEY, "GET", "/v1/services").json()["data"]
    assert (service["name"], service["category"], service["status"]) == ("calc", "test", "up")
    charge = next(op for op in service["operations"] if op["name"] == "charge")
    assert charge == {
        "name": "charge",
        "tool": "calc.charge",
        "confirm": True,
        "undo": "echo",
        "idempotency": True,
    }
    tools = {t["name"] for t in api(server, ADMIN_KEY, "GET", "/v1/tools").json()["data"]}
    assert {"calc.add", "calc.charge"} <= tools, "its operations are tools agents and plans can call"
    listed = aigrid(server, "service", "list")
    assert listed.returncode == 0 and "charge!~echo" in listed.stdout
    server.stop()
    server.start()
    (again,) = api(server, ADMIN_KEY, "GET", "/v1/services").json()["data"]
    assert (again["name"], again["status"]) == ("calc", "up"), "a restarted server opens it again"
    removed = aigrid(server, "service", "rm", "calc")
    assert removed.returncode == 0 and api(server, ADMIN_KEY, "GET", "/v1/services").json()["data"] == []


def test_a_manifest_that_does_not_match_the_service_is_refused(server: LiveServer, tmp_path: Path) -> None:
    lying = {**MANIFEST, "operations": {**MANIFEST["operations"], "refund": {"idempotency": True}}}
    refused = add(tmp_path, server, "liar", lying)
    assert refused.returncode == 1 and "lacks: refund" in refused.stderr
    broken = {**MANIFEST, "operations": {"charge": {"confirm": True, "undo": "void"}}}
    refused = add(tmp_path, server, "broken", broken)
    assert refused.returncode == 1 and "'void'" in refused.stderr
    assert api(server, ADMIN_KEY, "GET", "/v1/services").json()["data"] == [], "nothing half registered"
    key = server.new_tenant_key("acme")
    body = {
        "name": "mine",
        "kind": "mcp",
        "command": [sys.executable, str(STDIO_SERVER)],
        "manifest": MANIFEST,
    }
    assert api(server, key, "POST", "/admin/services", json=body).status_code in (401, 403)
    assert api(server, key, "GET", "/v1/services").status_code == 200
    assert aigrid(server, "service", "rm", "ghost").returncode == 1
    missing = aigrid(
        server, "service", "add", "x", "--manifest", str(tmp_path / "none.json"), "--url", "http://x"
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_manifests_say_what_undoes_what() -> None:
    manifest = Manifest.model_validate(MANIFEST)
    assert manifest.operations["charge"].undo == "echo" and not manifest.operations["add"].confirm
    with pytest.raises(ValueError, match="lacks"):
        Manifest.model_validate({**MANIFEST, "operations": {"pay": {"confirm": True, "undo": "refund"}}})
    with pytest.raises(ValueError):
        Manifest.model_validate({**MANIFEST, "operations": {}})


def test_a_service_kept_for_one_tenant_is_named_to_that_tenant_and_the_admin_only(server: LiveServer) -> None:
    owner, other = server.new_tenant_key("owners"), server.new_tenant_key("outsiders")
    command = [sys.executable, str(STDIO_SERVER)]
    body = {"name": "private", "kind": "mcp", "command": command, "manifest": MANIFEST, "tenant": "owners"}
    added = server.admin("POST", "/admin/services", json=body)
    assert added.status_code == 201 and added.json()["tenant"] == "owners", added.text

    def listed(key: str, **params: str) -> list[tuple[str, str | None]]:
        answer = api(server, key, "GET", "/v1/services", params=params)
        assert answer.status_code == 200, answer.text
        return [(s["name"], s["tenant"]) for s in answer.json()["data"]]

    try:
        assert listed(owner) == [("private", "owners")]
        assert listed(other) == [], "another tenant is not told of it, nor of where it runs"
        assert listed(ADMIN_KEY) == [("private", "owners")]
        assert listed(ADMIN_KEY, tenant="owners") == [("private", "owners")]
        assert listed(ADMIN_KEY, tenant="outsiders") == []
        asked = api(server, other, "GET", "/v1/services", params={"tenant": "owners"})
        assert asked.status_code == 403 and asked.json()["error"]["type"] == "permission_error"
    finally:
        assert server.admin("DELETE", "/admin/services/private").status_code == 200
