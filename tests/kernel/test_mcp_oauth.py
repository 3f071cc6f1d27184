"""OAuth for MCP servers over HTTP: aigrid's provider against an OAuth-protected MCP server (a double)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.auth import OAuthFlowError
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from tests.kernel.oauth_server import OAuthProtectedMcpServer, Running
from tests.support import free_port

from aigrid.config import OAuthConfig, ProviderConfig
from aigrid.kernel.providers.base import ProviderError
from aigrid.kernel.providers.manager import ProviderManager
from aigrid.kernel.providers.mcp import McpAuthError, McpProvider
from aigrid.kernel.providers.oauth import BrowserOAuth, StoredCredentials, oauth_failure
from aigrid.kernel.tools import CallContext, Tool, ToolRegistry
from aigrid.store.accounts import AccountError
from aigrid.store.db import make_engine, migrate
from aigrid.store.payers import PayerStore
from aigrid.store.provider_oauth import ProviderOAuthStore
from aigrid.store.providers import ProviderStore

CTX = CallContext(tenant_id=1, pid="p-1", agent="a", idempotency_key="p-1:1")
CLIENT, SECRET = "aigrid-test", "s3cret-value"


@pytest.fixture
def oauth_protected_mcp_server() -> Iterator[OAuthProtectedMcpServer]:
    """A fresh authorization server + protected MCP server (a test double) that knows one client."""
    double = OAuthProtectedMcpServer(free_port(), clients={CLIENT: SECRET})
    running = Running(double)
    yield double
    running.stop()


@pytest.fixture
def credentials(tmp_path: Path) -> ProviderOAuthStore:
    engine = make_engine(f"sqlite:///{tmp_path / 'oauth.db'}")
    migrate(engine)
    return ProviderOAuthStore(engine)


def config(server: OAuthProtectedMcpServer, **oauth: Any) -> ProviderConfig:
    return ProviderConfig(name="vault", kind="mcp", url=server.url, timeout_s=10, oauth=OAuthConfig(**oauth))


async def opened(provider: McpProvider) -> dict[str, Tool]:
    return {t.name: t for t in await provider.open()}


async def call(tools: dict[str, Tool], name: str, **arguments: Any) -> Any:
    return json.loads(await tools[f"vault.{name}"].handler(arguments, CTX))["result"]


async def test_client_credentials_discovers_gets_a_token_and_calls_a_tool(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, credentials: ProviderOAuthStore
) -> None:
    server = oauth_protected_mcp_server
    provider = McpProvider(config(server, client_id=CLIENT, client_secret=SECRET, scope="tools"), credentials)
    try:
        tools = await opened(provider)
        assert set(tools) == {"vault.add", "vault.whoami"}
        assert await call(tools, "whoami") == CLIENT
        assert await call(tools, "add", a=2, b=3) == 5
    finally:
        await provider.close()
    assert server.grants == ["client_credentials"]
    record = credentials.get("vault")
    assert record is not None and record.tokens is not None and record.client is not None
    assert OAuthToken.model_validate_json(record.tokens).access_token in server.tokens
    assert OAuthClientInformationFull.model_validate_json(record.client).client_secret == SECRET
    assert record.issuer is not None and record.issuer.rstrip("/") == server.base
    assert SECRET not in repr(record) and SECRET not in repr(provider.config)


async def test_a_kept_token_is_used_again_after_a_restart(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, credentials: ProviderOAuthStore
) -> None:
    server = oauth_protected_mcp_server
    for _ in range(2):  # a second provider is the server started again: the kept token still works
        provider = McpProvider(config(server, client_id=CLIENT, client_secret=SECRET), credentials)
        try:
            assert await call(await opened(provider), "add", a=1, b=1) == 2
        finally:
            await provider.close()
    assert server.grants == ["client_credentials"]
    # The provider's kept config has no secret: the one kept with its client stands.
    provider = McpProvider(config(server, client_id=CLIENT), credentials)
    try:
        assert await call(await opened(provider), "whoami") == CLIENT
    finally:
        await provider.close()


async def test_an_expired_token_is_refreshed(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, credentials: ProviderOAuthStore
) -> None:
    server = oauth_protected_mcp_server
    server.expires_in, server.refresh_tokens = 1, True
    provider = McpProvider(config(server, client_id=CLIENT, client_secret=SECRET), credentials)
    try:
        tools = await opened(provider)
        first = credentials.get("vault")
        await asyncio.sleep(1.2)
        assert await call(tools, "add", a=2, b=2) == 4
    finally:
        await provider.close()
    assert server.grants == ["client_credentials", "refresh_token"]
    second = credentials.get("vault")
    assert first is not None and second is not None and first.tokens != second.tokens
    assert second.expires_at_us is not None and first.expires_at_us is not None
    assert second.expires_at_us > first.expires_at_us


async def test_without_a_refresh_token_an_expired_or_revoked_token_is_replaced(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, credentials: ProviderOAuthStore
) -> None:
    server = oauth_protected_mcp_server
    server.expires_in = 1
    provider = McpProvider(config(server, client_id=CLIENT, client_secret=SECRET), credentials)
    try:
        tools = await opened(provider)
        await asyncio.sleep(1.2)
        assert await call(tools, "add", a=1, b=2) == 3  # expired: a new token, the call retried
        server.expires_in = 3600
        await asyncio.sleep(1.2)
        assert await call(tools, "add", a=1, b=3) == 4
        server.revoke_all()  # the client still thinks its token good: the 401 gets it a new one
        assert await call(tools, "add", a=1, b=4) == 5
    finally:
        await provider.close()
    assert server.grants == ["client_credentials"] * 4
    assert server.refusals == 1  # the revoked token; an expired one is not even sent


async def test_a_client_is_registered_dynamically_when_none_is_given(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, credentials: ProviderOAuthStore
) -> None:
    server = oauth_protected_mcp_server
    provider = McpProvider(config(server), credentials)
    try:
        registered = await call(await opened(provider), "whoami")
    finally:
        await provider.close()
    assert registered.startswith("dyn-")
    assert len(server.registered) == 1
    assert server.registered[0]["grant_types"] == ["client_credentials"]
    assert server.registered[0]["client_name"] == "aigrid"
    record = credentials.get("vault")
    assert record is not None and record.registered
    # Started again, the provider keeps the client it registered.
    provider = McpProvider(config(server), credentials)
    try:
        assert await call(await opened(provider), "whoami") == registered
    finally:
        await provider.close()
    assert len(server.registered) == 1


async def test_wrong_credentials_fail_to_open_with_the_status_and_what_to_do(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, credentials: ProviderOAuthStore
) -> None:
    server = oauth_protected_mcp_server
    provider = McpProvider(config(server, client_id=CLIENT, client_secret="wrong"), credentials)
    with pytest.raises(ProviderError) as failed:
        await provider.open()
    await provider.close()
    message = str(failed.value)
    assert message.startswith(f"mcp provider 'vault': could not connect to {server.url}: ")
    assert "the server answered 401 Unauthorized: it wants authorization (WWW-Authenticate: Bearer" in message
    assert "the authorization server gave no token (Token exchange failed (401)" in message
    assert "invalid_client" in message
    assert message.endswith("check the oauth client_id and client_secret and the scope")
    assert "wrong" not in message


async def test_no_registration_and_no_client_says_to_give_one(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, credentials: ProviderOAuthStore
) -> None:
    server = oauth_protected_mcp_server
    server.registration = False
    provider = McpProvider(config(server), credentials)
    with pytest.raises(
        ProviderError, match=r"registering an OAuth client dynamically failed .*client_id and"
    ):
        await provider.open()
    await provider.close()


async def test_a_failed_refresh_and_refused_client_fail_the_call_clearly(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, credentials: ProviderOAuthStore
) -> None:
    server = oauth_protected_mcp_server
    server.expires_in, server.refresh_tokens = 1, True
    provider = McpProvider(config(server, client_id=CLIENT, client_secret=SECRET), credentials)
    try:
        tools = await opened(provider)
        server.refuse_refresh = True
        server.clients[CLIENT] = "rotated"  # the admin's secret no longer works either
        await asyncio.sleep(1.2)
        with pytest.raises(McpAuthError) as failed:
            await call(tools, "add", a=1, b=1)
    finally:
        await provider.close()
    message = str(failed.value)
    assert "the token expired and refreshing it failed (401: " in message
    assert "the authorization server gave no token" in message
    assert "check the oauth client_id and client_secret" in message


async def test_the_first_authorization_server_is_pinned_and_another_one_refused(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, credentials: ProviderOAuthStore
) -> None:
    server = oauth_protected_mcp_server
    provider = McpProvider(config(server, client_id=CLIENT, client_secret=SECRET), credentials)
    try:
        await opened(provider)
    finally:
        await provider.close()
    # As if the first token had come from elsewhere: this server's authorization server is now another one.
    credentials.pin_issuer("vault", "https://auth.elsewhere.example")
    server.revoke_all()
    provider = McpProvider(config(server, client_id=CLIENT), credentials)
    with pytest.raises(ProviderError) as failed:
        await provider.open()
    await provider.close()
    message = str(failed.value)
    assert "401 Unauthorized" in message
    assert "another authorization server than the pinned at the first token one" not in message
    assert "than the one pinned at the first token (https://auth.elsewhere.example)" in message
    assert server.grants == ["client_credentials"], "the secret was not sent to the other server"


# --- the authorization-code grant: an admin logs in once ---


async def test_an_admin_logs_in_once_and_the_provider_opens_with_the_tokens(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, tmp_path: Path
) -> None:
    server = oauth_protected_mcp_server
    engine = make_engine(f"sqlite:///{tmp_path / 'login.db'}")
    migrate(engine)
    registry = ToolRegistry()
    manager = ProviderManager(registry, ProviderStore(engine), lambda _: 1, [], PayerStore(engine).refusal)
    login = config(server, grant="authorization_code", client_id=CLIENT, client_secret=SECRET)
    try:
        added = await manager.add(login)  # kept, down until someone logs in
        assert added.error is not None and "run `aigrid tool login vault`" in added.error
        (kept,) = ProviderStore(engine).all()
        assert kept.oauth is not None and kept.oauth.client_id == CLIENT
        assert kept.oauth.client_secret is None, "the secret is kept with the client, not in the config"
        assert "401 Unauthorized" in added.error
        with pytest.raises(AccountError) as early:
            await manager.finish_login("vault", "http://127.0.0.1:8976/oauth/callback?code=x")
        assert early.value.status == 409

        url = await manager.login("vault")
        assert url.startswith(f"{server.base}/authorize?") and "code_challenge=" in url
        async with httpx.AsyncClient() as browser:
            sent_back = (await browser.get(url)).headers["location"]
        assert sent_back.startswith("http://127.0.0.1:8976/oauth/callback?")
        status = await manager.finish_login("vault", sent_back)
        assert status.error is None and status.tools == ("vault.add", "vault.whoami")
        assert server.grants == ["authorization_code"]
        whoami = registry.get("vault.whoami")
        assert whoami is not None and json.loads(await whoami.handler({}, CTX))["result"] == CLIENT

        server.deny = True
        refused = await manager.login("vault")
        async with httpx.AsyncClient() as browser:
            sent_back = (await browser.get(refused)).headers["location"]
        with pytest.raises(AccountError, match="the authorization server refused: access_denied"):
            await manager.finish_login("vault", sent_back)
    finally:
        await manager.close()


async def test_a_login_is_only_for_the_authorization_code_grant(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, tmp_path: Path
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'login.db'}")
    migrate(engine)
    manager = ProviderManager(
        ToolRegistry(), ProviderStore(engine), lambda _: 1, [], PayerStore(engine).refusal
    )
    try:
        await manager.add(config(oauth_protected_mcp_server, client_id=CLIENT, client_secret=SECRET))
        with pytest.raises(AccountError, match="its oauth grant is not authorization_code") as refused:
            await manager.login("vault")
        assert refused.value.status == 400
        with pytest.raises(AccountError) as unknown:
            await manager.login("ghost")
        assert unknown.value.status == 404
    finally:
        await manager.close()


# --- what the SDK is told, and what its refusals are said as ---


def test_a_url_based_client_id_goes_to_the_sdk_for_a_login_without_a_client(
    credentials: ProviderOAuthStore,
) -> None:
    document = "https://aigrid.example/oauth/client.json"
    oauth = OAuthConfig(grant="authorization_code", client_metadata_url=document)
    auth = BrowserOAuth("http://127.0.0.1:1/mcp", StoredCredentials(credentials, "vault"), oauth, None)
    assert auth.context.client_metadata_url == document
    for wrong in (
        {"client_metadata_url": document},  # client_credentials
        {"grant": "authorization_code", "client_id": CLIENT, "client_metadata_url": document},
        {"grant": "authorization_code", "client_metadata_url": "http://aigrid.example/client.json"},
        {"grant": "authorization_code", "client_metadata_url": "https://aigrid.example/"},
    ):
        with pytest.raises(ValueError, match="client_metadata_url"):
            OAuthConfig(**wrong)


def test_metadata_naming_another_issuer_is_not_blamed_on_a_pin(credentials: ProviderOAuthStore) -> None:
    oauth = OAuthConfig(grant="authorization_code")
    auth = BrowserOAuth("http://127.0.0.1:1/mcp", StoredCredentials(credentials, "vault"), oauth, None)
    refused = OAuthFlowError("Authorization server metadata issuer mismatch: http://a/oauth != http://a")
    message = oauth_failure(refused, auth)
    assert message is not None and "pinned" not in message
    assert "names another issuer than the one it was looked up for" in message
    assert "RFC 8414 section 3.3" in message


async def test_a_call_refused_for_scope_says_to_log_in_and_the_login_asks_for_that_scope(
    oauth_protected_mcp_server: OAuthProtectedMcpServer, tmp_path: Path
) -> None:
    server = oauth_protected_mcp_server
    engine = make_engine(f"sqlite:///{tmp_path / 'login.db'}")
    migrate(engine)
    registry = ToolRegistry()
    manager = ProviderManager(registry, ProviderStore(engine), lambda _: 1, [], PayerStore(engine).refusal)
    login = config(server, grant="authorization_code", client_id=CLIENT, client_secret=SECRET, scope="audit")

    async def logged_in() -> str:
        url = await manager.login("vault")
        async with httpx.AsyncClient() as browser:
            status = await manager.finish_login("vault", (await browser.get(url)).headers["location"])
        assert status.error is None
        return url

    try:
        await manager.add(login)
        first = await logged_in()
        assert "scope=tools+audit" in first, "the challenge's scope, and the configured one"
        # The server now wants more than the token has: it answers 403 insufficient_scope (a step-up).
        for key, token in list(server.tokens.items()):
            server.tokens[key] = token.model_copy(update={"scopes": ["audit"]})
        whoami = registry.get("vault.whoami")
        assert whoami is not None
        with pytest.raises(McpAuthError) as refused:
            await whoami.handler({}, CTX)
        message = str(refused.value)
        assert "run `aigrid tool login vault`" in message
        assert "the server wants the scope 'audit tools'" in message
        again = await logged_in()
        assert "scope=tools+audit" in again
        whoami = registry.get("vault.whoami")
        assert whoami is not None and json.loads(await whoami.handler({}, CTX))["result"] == CLIENT
    finally:
        await manager.close()
