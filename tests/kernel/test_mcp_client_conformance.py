"""aigrid's MCP client (its tool providers) against the MCP conformance suite's client scenarios.

The suite starts a test server (and for auth/* an authorization server) per scenario and runs
tests/kernel/mcp_conformance_client.py against it: aigrid's ProviderManager and McpProvider, with
the OAuth an admin would configure and, for a login, the admin's part played with httpx. Node 22
and the suite come from `make mcp-conformance` (see tests/conformance_suite.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conformance_suite import NODE22, SUITE, outcomes, require_suite
from tests.kernel.mcp_conformance_client import DONE, MIGRATED

import aigrid
from aigrid.store.db import make_engine, migrate

pytestmark = pytest.mark.slow

CLIENT = Path(__file__).with_name("mcp_conformance_client.py")

# The scenarios aigrid's client meets, and must go on meeting.
APPLIES = {
    "initialize": "the handshake and a tool listing",
    "tools_call": "a tool called with its arguments",
    "sse-retry": "a call's SSE stream closed mid-call is resumed after the server's retry delay",
    "auth/metadata-default": "an admin's login: resource (RFC 9728) and authorization server (RFC 8414) "
    "metadata found, a client registered (RFC 7591), the code grant with PKCE",
    "auth/metadata-var1": "the login, with the metadata at other well-known locations",
    "auth/metadata-var2": "the login, with the metadata at other well-known locations",
    "auth/metadata-var3": "the login, with the metadata at other well-known locations",
    "auth/basic-cimd": "the login with a URL-based client id (oauth client_metadata_url)",
    "auth/scope-from-www-authenticate": "the login asks for the scope of the server's challenge",
    "auth/scope-from-scopes-supported": "the login asks for the resource's scopes_supported",
    "auth/scope-omitted-when-undefined": "the login asks for no scope when none is named",
    "auth/scope-step-up": "a call refused for lack of scope (403 insufficient_scope) fails saying to log "
    "in again, and the admin's new login asks for the scope the server wanted too",
    "auth/scope-retry-limit": "a server that refuses every token is given up on, not retried forever",
    "auth/token-endpoint-auth-basic": "a registered client authenticates as registered (client_secret_basic)",
    "auth/token-endpoint-auth-post": "a registered client authenticates as registered (client_secret_post)",
    "auth/token-endpoint-auth-none": "a registered public client sends no secret",
    "auth/pre-registration": "the login with the client the admin was given (oauth client_id and secret)",
    "auth/2025-03-26-oauth-endpoint-fallback": "a 2025-03-26 server without metadata: the default endpoints",
    "auth/resource-mismatch": "resource metadata for another resource is refused (RFC 8707)",
    "auth/offline-access-scope": "offline_access is asked for where the authorization server offers it",
    "auth/offline-access-not-supported": "offline_access is not asked for where it is not offered",
    "auth/client-credentials-basic": "the client_credentials grant with the admin's client id and secret",
}
# Of those, the ones where refusing the server is right: the client ends without calling a tool.
REFUSED = {"auth/resource-mismatch", "auth/scope-retry-limit"}
DOES_NOT_APPLY = {
    "elicitation-sep1034-client-defaults": "aigrid's MCP client declares no elicitation capability and "
    "refuses the server's elicitation/create: its tools run inside unattended agent processes, which ask "
    "a person through aigrid's approvals instead",
    "auth/2025-03-26-oauth-metadata-backcompat": "the scenario's authorization server metadata, found at "
    "the MCP server's origin, names the issuer <origin>/oauth: the SDK's RFC 8414 section 3.3 check "
    "(SEP-2468) refuses metadata whose issuer is not the one it was looked up for",
    "auth/client-credentials-jwt": "aigrid's client_credentials client authenticates with a client secret "
    "(client_secret_basic or client_secret_post); private_key_jwt (RFC 7523) is not configurable",
    "auth/cross-app-access-complete-flow": "enterprise-managed authorization (SEP-990: an identity "
    "provider's ID token exchanged for an ID-JAG, then a JWT bearer grant) acts for a signed-in user; "
    "aigrid's providers act as aigrid (client_credentials) or with an admin's login",
}
# Checks that measure time. The suite starts all its clients at once, which on two shared cores can
# delay a reconnection past the check's limit (1 s for a 500 ms retry) with nothing wrong; that the
# client reconnects, with Last-Event-ID, is still asserted by the scenario's other checks.
TIMING = {"client-sse-retry-timing"}


def _problems(checks: list[dict[str, object]]) -> list[str]:
    """A scenario's failed checks and warnings, other than timing."""
    return [
        f"{c.get('id')}: {c.get('errorMessage') or c.get('description')}"
        for c in checks
        if c.get("status") in ("FAILURE", "WARNING") and c.get("id") not in TIMING
    ]


def _finished(results: Path, scenario: str) -> bool:
    """Whether the client helper got through a scenario (its last line of output says so)."""
    stdout = next(results.glob(f"{scenario}-*/stdout.txt"), None)
    return stdout is not None and stdout.read_text().strip().endswith(f"\n{DONE}")


def test_the_conformance_suites_client_scenarios_that_apply_pass(tmp_path: Path) -> None:
    require_suite()
    # The suite splits its client command at spaces, then adds the server's URL.
    command = f"{sys.executable} {CLIENT}"
    assert len(command.split(" ")) == 2, f"a path with a space cannot be the suite's command: {command}"
    src = Path(aigrid.__file__).resolve().parents[1]  # this aigrid, not another one installed
    migrated = tmp_path / "migrated.db"
    engine = make_engine(f"sqlite:///{migrated}")
    migrate(engine)
    engine.dispose()  # its last connection closed: the write-ahead log is in the file to copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    env[MIGRATED] = str(migrated)
    results = tmp_path / "results"
    suite = [str(NODE22), str(SUITE), "client", "--command", command, "--suite", "all"]
    run = subprocess.run(
        [*suite, "--timeout", "120000", "-o", str(results)],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
        env=env,
    )
    found = outcomes(results) if results.exists() else {}
    assert found, f"the suite wrote no results:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    unsorted = sorted(set(found) - set(APPLIES) - set(DOES_NOT_APPLY))
    assert not unsorted, f"scenarios new to this test, to sort into APPLIES or DOES_NOT_APPLY: {unsorted}"
    assert not set(APPLIES) - set(found), "every scenario that applies ran"
    failed = {s: _problems(found[s]) for s in APPLIES if _problems(found[s])}
    assert not failed, f"{failed}\n{run.stdout[-4000:]}"
    unfinished = sorted(s for s in set(APPLIES) - REFUSED if not _finished(results, s))
    assert not unfinished, f"the client did not get through: {unfinished}\n{run.stderr[-4000:]}"
    assert not [s for s in REFUSED if _finished(results, s)], "a server that should be refused was used"
