"""`aigrid mcp --http` against the MCP conformance suite's server scenarios (tests/conformance_suite.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli.test_mcp_server import http_mcp_of, save_agent
from tests.conformance_suite import NODE22, SUITE, outcomes, require_suite
from tests.support import LiveServer

pytestmark = pytest.mark.slow

# The scenarios aigrid's server meets, and must go on meeting.
APPLIES = {
    "server-initialize": "the handshake, with aigrid's name, version and capabilities",
    "ping": "ping answers {}",
    "logging-set-level": "logging/setLevel is accepted (agent tools log their journal at that level)",
    "tools-list": "one tool per agent, and chat, each with a description and an input schema",
    # It calls the suite's test_simple_text and checks only the answer's shape: aigrid answers an
    # unknown tool with a text result marked is_error, which has that shape.
    "tools-call-simple-text": "a tool call's answer is text content",
    "tools-call-error": "a failed tool call is a result with isError, not a protocol error",
    "server-sse-multiple-streams": "several SSE streams of one session at once",
    "resources-list": "the inbox, the agents' specs and the newest processes' journals",
    "prompts-list": "run_agent, new_agent and explain_process, each described",
    "dns-rebinding-protection": "a request from a foreign Host or Origin is refused",
}
# The scenarios that test the suite's own reference server: they call tools, read resources and
# get prompts by the reference's names (test_image_content, test://static-text, ...), which a
# server of a tenant's agents does not have.
REFERENCE = "needs the suite's reference {}, which aigrid does not have"
DOES_NOT_APPLY = {
    "completion-complete": REFERENCE.format("prompt test_prompt_with_arguments")
    + " (aigrid completes its own prompts' agent names and pids)",
    "tools-call-image": REFERENCE.format("tool test_image_content") + "; agents answer in text",
    "tools-call-audio": REFERENCE.format("tool test_audio_content") + "; agents answer in text",
    "tools-call-embedded-resource": REFERENCE.format("tool test_embedded_resource"),
    "tools-call-mixed-content": REFERENCE.format("tool test_multiple_content_types"),
    "tools-call-with-logging": REFERENCE.format("tool test_tool_with_logging")
    + " (agent tools' log messages are tested in test_mcp_notifications.py)",
    "tools-call-with-progress": REFERENCE.format("tool test_tool_with_progress")
    + " (agent tools' progress is tested in test_mcp_notifications.py)",
    "tools-call-sampling": REFERENCE.format("tool test_sampling")
    + "; agents call the grid's models, never the client's",
    "tools-call-elicitation": REFERENCE.format("tool test_elicitation")
    + "; agents ask a person through aigrid's approvals, not elicitation",
    "elicitation-sep1034-defaults": REFERENCE.format("tool test_client_elicitation_defaults"),
    "elicitation-sep1330-enums": REFERENCE.format("tool test_elicitation_sep1330_enums"),
    "json-schema-2020-12": REFERENCE.format("tool json_schema_2020_12_tool with $schema and $defs"),
    "server-sse-polling": REFERENCE.format("tool test_reconnection, which closes its stream mid-call")
    + " (resuming a lost stream is tested in test_mcp_server.py)",
    "resources-read-text": REFERENCE.format("resource test://static-text"),
    "resources-read-binary": REFERENCE.format("resource test://static-binary"),
    "resources-templates-read": REFERENCE.format("template test://template/{id}/data"),
    "resources-subscribe": REFERENCE.format("resource test://watched-resource")
    + "; aigrid offers no resource subscriptions",
    "resources-unsubscribe": REFERENCE.format("resource test://watched-resource")
    + "; aigrid offers no resource subscriptions",
    "prompts-get-simple": REFERENCE.format("prompt test_simple_prompt"),
    "prompts-get-with-args": REFERENCE.format("prompt test_prompt_with_arguments"),
    "prompts-get-embedded-resource": REFERENCE.format("prompt test_prompt_with_embedded_resource"),
    "prompts-get-with-image": REFERENCE.format("prompt test_prompt_with_image"),
}


@pytest.fixture(scope="module")
def suite() -> None:
    """Node 22 and the suite, where `make mcp-conformance` puts them; before any server starts."""
    require_suite()


@pytest.fixture(scope="module")
def served(suite: None, server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`aigrid mcp --http` for tenant initech, with two agents on the mock model."""
    key = server.new_tenant_key("initech")
    save_agent(server, key, name="writer", description="Writes short poems.")
    save_agent(server, key, name="careful", tools=["notify.owner"], approval=["notify.owner"])
    with http_mcp_of(server, key, tmp_path_factory.mktemp("mcp-conformance")) as url:
        yield url


def test_the_conformance_suites_server_scenarios_that_apply_pass(served: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [str(NODE22), str(SUITE), "server", "--url", served, "--suite", "all", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = outcomes(tmp_path, "server-")
    assert found, f"the suite wrote no results:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    unsorted = sorted(set(found) - set(APPLIES) - set(DOES_NOT_APPLY))
    assert not unsorted, f"scenarios new to this test, to sort into APPLIES or DOES_NOT_APPLY: {unsorted}"
    assert not set(APPLIES) - set(found), "every scenario that applies ran"
    failed = {
        scenario: [str(c.get("errorMessage")) for c in checks if c.get("status") == "FAILURE"]
        for scenario, checks in found.items()
        if scenario in APPLIES
    }
    assert not {s: f for s, f in failed.items() if f}, run.stdout[-4000:]
