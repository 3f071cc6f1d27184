"""Agents from sentences on a live server: compile, confirm, save, edit with a diff, versions, refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.api.test_tools_api import api, wait_state
from tests.support import LiveServer, RecordingUpstream, aigrid

pytestmark = pytest.mark.slow

EXAMPLE = (
    "Every weekday at 8:00, check the price of the Lumen 27-inch monitor in both shops "
    "and tell me when it is under 2,100 yuan"
)
SERVER_CONFIG = '[kernel]\ncompiler_model = "mock"\nagent_model = "mock"\n'


def model_writes(upstream: RecordingUpstream, *answers: dict[str, Any] | str) -> None:
    """The model's next answers, as the compiler receives them (JSON text)."""
    upstream.script[:] = [
        {"role": "assistant", "content": a if isinstance(a, str) else json.dumps(a)} for a in answers
    ]


WATCHER = {
    "name": "lumen-price-watch",
    "instructions": "Check the Lumen 27-inch monitor in both shops; tell me when it is under 2,100 yuan.",
    "tools": ["notify.owner"],
}


def test_a_sentence_becomes_an_agent_after_the_user_confirms(
    server: LiveServer, upstream: RecordingUpstream
) -> None:
    key = server.new_tenant_key("acme")
    model_writes(upstream, WATCHER)
    body = {"description": EXAMPLE, "timezone": "Asia/Shanghai", "dry_run": True}
    draft = api(server, key, "POST", "/v1/agents", json=body)
    assert draft.status_code == 200, draft.text
    assert draft.json()["spec"]["triggers"][0] == {
        "kind": "cron",
        "cron": "0 8 * * 1-5",
        "timezone": "Asia/Shanghai",
        "input": "",
        "missed": "run_once",
    }
    assert upstream.requests[-1]["response_format"]["type"] == "json_schema", (
        "the model writes under a grammar"
    )
    assert api(server, key, "GET", "/v1/agents").json()["data"] == [], "a dry run saves nothing"

    model_writes(upstream, WATCHER)
    declined = aigrid(
        server, "agent", "create", EXAMPLE, "--tenant", "acme", "--timezone", "Asia/Shanghai", answer="n\n"
    )
    assert (
        declined.returncode == 0
        and "Not saved." in declined.stdout
        and "cron: 0 8 * * 1-5" in declined.stdout
    )
    model_writes(upstream, WATCHER)
    saved = aigrid(
        server, "agent", "create", EXAMPLE, "--tenant", "acme", "--timezone", "Asia/Shanghai", answer="y\n"
    )
    assert saved.returncode == 0, saved.stderr
    assert "Agent lumen-price-watch of tenant acme is at version 1" in saved.stdout
    (agent,) = api(server, key, "GET", "/v1/agents").json()["data"]
    assert agent["spec"]["tools"] == ["notify.owner"] and agent["spec"]["priority"] == "background"

    model_writes(
        upstream, {**WATCHER, "instructions": WATCHER["instructions"] + " Also check the 24-inch one."}
    )
    edited = aigrid(
        server,
        "agent",
        "edit",
        "lumen-price-watch",
        "also check the 24-inch one",
        "--tenant",
        "acme",
        "--yes",
    )
    assert edited.returncode == 0, edited.stderr
    assert "+++ new" in edited.stdout and "24-inch" in edited.stdout and "version 2" in edited.stdout
    versions = api(server, key, "GET", "/v1/agents/lumen-price-watch/versions").json()["data"]
    assert [v["version"] for v in versions] == [1, 2]
    pid = api(
        server, key, "POST", "/v1/processes", json={"agent": "lumen-price-watch", "input": "now"}
    ).json()["pid"]
    assert wait_state(server, key, pid, ("done",))["agent_version"] == 2


def test_what_cannot_be_compiled_is_refused_clearly_and_nothing_is_saved(
    server: LiveServer, upstream: RecordingUpstream
) -> None:
    key = server.new_tenant_key("globex")
    model_writes(upstream, "I think the agent should", "sorry")
    refused = api(server, key, "POST", "/v1/agents", json={"description": "Watch the monitor prices"})
    assert refused.status_code == 422
    assert refused.json()["error"]["message"].startswith(
        "Could not compile the agent: could not make a valid agent"
    )
    assert api(server, key, "GET", "/v1/agents").json()["data"] == []
    empty = api(server, key, "POST", "/v1/agents", json={"description": "  "})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "description"
    zone = api(server, key, "POST", "/v1/agents", json={"description": EXAMPLE, "timezone": "Mars/Base"})
    assert zone.status_code == 422 and "time zone" in zone.json()["error"]["message"]
    missing = api(server, key, "POST", "/v1/agents/nobody/edit", json={"change": "faster"})
    assert missing.status_code == 404
    model_writes(upstream, {**WATCHER, "tools": []})
    silent = aigrid(server, "agent", "create", "Watch the monitor prices", "--tenant", "globex")
    assert silent.returncode == 2 and "pass --yes" in silent.stderr
    assert api(server, key, "GET", "/v1/agents").json()["data"] == []
