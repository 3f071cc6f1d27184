"""A test helper: aigrid's MCP client as the conformance suite's client command.

The suite (@modelcontextprotocol/conformance) starts a test server for one scenario and runs
``python mcp_conformance_client.py URL`` with the scenario's name in MCP_CONFORMANCE_SCENARIO and,
for some, the client it registered in MCP_CONFORMANCE_CONTEXT. This opens the server as an aigrid
tool provider through the real ``ProviderManager`` (``McpProvider``, its OAuth and its login), plays
the admin where the scenario wants an authorization-code login (as ``aigrid tool login`` does, with
httpx for the browser, since the suite's authorization server approves at once), then calls the
tools the scenario expects. It prints ``OK`` last when every step went through.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from aigrid.config import OAuthConfig, ProviderConfig
from aigrid.kernel.providers.manager import ProviderManager, ProviderStatus
from aigrid.kernel.providers.mcp import McpAuthError
from aigrid.kernel.tools import CallContext, ToolRegistry
from aigrid.store.db import make_engine, migrate
from aigrid.store.payers import PayerStore
from aigrid.store.providers import ProviderStore

NAME = "conformance"
# An empty database already migrated, to copy (the test makes one for all the scenarios).
MIGRATED = "AIGRID_CONFORMANCE_DB"
DONE = "OK"
CTX = CallContext(tenant_id=1, pid="p-1", agent="conformance", idempotency_key="p-1:1")
# The arguments of the tools a scenario calls by name; the others are called without any.
ARGUMENTS: dict[str, dict[str, Any]] = {"add_numbers": {"a": 5, "b": 3}}
# The URL-based client id (Client ID Metadata Document) the suite's authorization server expects.
CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"


def oauth_for(scenario: str, context: dict[str, Any]) -> OAuthConfig | None:
    """The provider's oauth section for a scenario, as an admin would configure it."""
    if not scenario.startswith("auth/"):
        return None
    # The suite hands over the client it registered beforehand, if any (its secret too, if it has one).
    given = {k: context[k] for k in ("client_id", "client_secret") if context.get(k)}
    if scenario.startswith("auth/client-credentials-"):
        return OAuthConfig(**given)
    if given:
        return OAuthConfig(grant="authorization_code", **given)
    # Else a URL-based client id where the authorization server takes one, or one registered (RFC 7591).
    return OAuthConfig(grant="authorization_code", client_metadata_url=CLIENT_METADATA_URL)


async def log_in(manager: ProviderManager) -> ProviderStatus:
    """The admin's login: open the authorization URL in a "browser", hand back where it was sent."""
    authorization_url = await manager.login(NAME)
    async with httpx.AsyncClient(timeout=30) as browser:
        answer = await browser.get(authorization_url)
    sent_back = answer.headers.get("location")
    if answer.status_code not in (302, 303) or not sent_back:
        raise SystemExit(f"the authorization server answered {answer.status_code}, not a redirect")
    return await manager.finish_login(NAME, sent_back)


async def call(registry: ToolRegistry, name: str, arguments: dict[str, Any]) -> Any:
    """A tool's answer, called the way the kernel calls it."""
    tool = registry.get(name)
    assert tool is not None, f"no tool {name}"
    return await tool.handler(arguments, CTX)


async def run(url: str, scenario: str, context: dict[str, Any], data: Path) -> None:
    """Open the scenario's server as a provider, log in where it wants one, and call its tools."""
    database = data / "conformance.db"
    migrated = os.environ.get(MIGRATED)
    if migrated:
        shutil.copyfile(migrated, database)  # the suite runs every scenario at once: migrate only once
    engine = make_engine(f"sqlite:///{database}")
    if not migrated:
        migrate(engine)
    registry = ToolRegistry()
    manager = ProviderManager(registry, ProviderStore(engine), lambda _: 1, [], PayerStore(engine).refusal)
    oauth = oauth_for(scenario, context)
    config = ProviderConfig(name=NAME, kind="mcp", url=url, timeout_s=20, oauth=oauth)
    try:
        status = await manager.add(config)
        if oauth is not None and oauth.grant == "authorization_code":
            status = await log_in(manager)
        if status.error is not None:
            raise SystemExit(f"the provider is down: {status.error}")
        print("tools:", ", ".join(status.tools))
        for name in status.tools:
            listed = name.removeprefix(f"{NAME}.")
            try:
                answer = await call(registry, name, ARGUMENTS.get(listed, {}))
            except McpAuthError as refused:
                # A server that wants more for this call (a step-up): the admin logs in again, as told.
                print(f"{listed}: {refused}")
                if oauth is None or oauth.grant != "authorization_code":
                    raise
                status = await log_in(manager)
                if status.error is not None:
                    raise SystemExit(f"the provider is down after a new login: {status.error}") from refused
                answer = await call(registry, name, ARGUMENTS.get(listed, {}))
            print(f"{listed}:", answer)
    finally:
        await manager.close()
        engine.dispose()
    print(DONE)


def main() -> None:
    """``mcp_conformance_client.py URL``, the way the suite runs a client command."""
    url = sys.argv[-1]
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    with tempfile.TemporaryDirectory(prefix="aigrid-conformance-") as data:
        asyncio.run(run(url, scenario, context, Path(data)))


if __name__ == "__main__":
    main()
