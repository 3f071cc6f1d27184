"""OAuth for MCP servers over HTTP, through the SDK's client auth: client_credentials, or a login.

aigrid calls tools with nobody at a browser, so the usual grant is the machine-to-machine one: the
admin's client id and secret, or a client registered dynamically (RFC 7591) where the authorization
server offers it. The authorization-code grant is for servers that want a person: an admin logs in
once (``oauth_login.Login``) and the refresh token carries on. The SDK's provider does the rest on
a 401: discovery (RFC 9728, RFC 8414), the token, its refresh and the retry. Clients and tokens
live in the database (``tool_provider_oauth``).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Protocol

import httpx2
from mcp.client.auth import (
    AuthorizationCodeResult,
    OAuthClientProvider,
    OAuthFlowError,
    OAuthRegistrationError,
    OAuthTokenError,
)
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.auth.utils import extract_field_from_www_auth, union_scopes
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.shared.exceptions import MCPDeprecationWarning

from aigrid.clock import now_us
from aigrid.config import OAuthConfig
from aigrid.store.provider_oauth import OAuthRecord, ProviderOAuthStore


def _client_fields(oauth: OAuthConfig) -> dict[str, Any]:
    """The client metadata (RFC 7591) of the grant: registered with, or kept for a given client."""
    code = oauth.grant == "authorization_code"
    return {
        "redirect_uris": [oauth.redirect_uri] if code else None,
        "grant_types": ["authorization_code", "refresh_token"] if code else ["client_credentials"],
        "token_endpoint_auth_method": oauth.token_endpoint_auth_method,
        "scope": oauth.scope,
    }


class StoredCredentials:
    """The SDK's ``TokenStorage`` for one provider, kept in aigrid's database."""

    def __init__(self, store: ProviderOAuthStore, provider: str) -> None:
        self._store = store
        self._provider = provider

    @property
    def provider(self) -> str:
        """The provider's name."""
        return self._provider

    async def drop_tokens(self) -> None:
        """Forget the tokens (a new login replaces them)."""
        await asyncio.to_thread(self._store.drop_tokens, self._provider)

    async def record(self) -> OAuthRecord | None:
        """What is kept for the provider."""
        return await asyncio.to_thread(self._store.get, self._provider)

    async def get_tokens(self) -> OAuthToken | None:
        """The kept tokens, if any."""
        record = await self.record()
        return (
            None if record is None or record.tokens is None else OAuthToken.model_validate_json(record.tokens)
        )

    async def set_tokens(self, tokens: OAuthToken) -> None:
        """Keep new tokens with the time they expire (``expires_in`` means nothing after a restart)."""
        expires_at_us = None if tokens.expires_in is None else now_us() + tokens.expires_in * 1_000_000
        await asyncio.to_thread(
            self._store.set_tokens, self._provider, tokens.model_dump_json(), expires_at_us
        )

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        """The provider's OAuth client, given by the admin or registered."""
        record = await self.record()
        if record is None or record.client is None:
            return None
        return OAuthClientInformationFull.model_validate_json(record.client)

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        """Keep a client the SDK registered dynamically."""
        await asyncio.to_thread(self._store.set_client, self._provider, client_info.model_dump_json(), True)

    async def pin_issuer(self, issuer: str) -> None:
        """Remember the authorization server that gave the first token."""
        await asyncio.to_thread(self._store.pin_issuer, self._provider, issuer)

    async def seed(self, oauth: OAuthConfig) -> None:
        """Bring the kept client in line with the config: the admin's client, or one to register."""
        record = await self.record()
        kept = (
            None
            if record is None or record.client is None
            else OAuthClientInformationFull.model_validate_json(record.client)
        )
        if oauth.client_id is None:
            if kept is not None and record is not None and not record.registered:
                await asyncio.to_thread(self._store.forget, self._provider)  # register one instead
            return
        if oauth.client_secret is None and kept is not None and kept.client_id == oauth.client_id:
            return  # a kept provider's config has no secret: the one kept here stands
        secret = None if oauth.client_secret is None else oauth.client_secret.get_secret_value()
        fields = _client_fields(oauth) | {"client_id": oauth.client_id, "client_secret": secret}
        if secret is None:
            fields["token_endpoint_auth_method"] = "none"  # a public client
        client = OAuthClientInformationFull.model_validate(fields)
        await asyncio.to_thread(self._store.set_client, self._provider, client.model_dump_json(), False)


class KeptOAuth(OAuthClientProvider):
    """What aigrid's OAuth providers share: the client and tokens kept in the database, failures told."""

    oauth: OAuthConfig
    credentials: StoredCredentials
    # Why the last refresh of an expired token failed, told when getting a new one fails too.
    refresh_failure: str | None = None
    # Why the last auth flow got no token: the SDK's transport ends the session with no word of it.
    flow_failure: OAuthFlowError | None = None
    # The scope a server wanted for a call beyond the token's (a step-up), for the admin's next login.
    wanted_scope: str | None = None

    @property
    def issuer(self) -> str | None:
        """The authorization server token requests may go to, when one is configured or pinned."""
        return self.oauth.issuer

    async def _initialize(self) -> None:
        """Load the kept client and tokens, with the tokens' expiry."""
        record = await self.credentials.record()
        self.context.current_tokens = await self.credentials.get_tokens()
        self.context.client_info = await self.credentials.get_client_info()
        expires = None if record is None else record.expires_at_us
        self.context.token_expiry_time = None if expires is None else expires / 1_000_000
        self._initialized = True

    async def _auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        """The SDK's flow, keeping why it failed and, after a 403 insufficient_scope, the scope wanted."""
        self.flow_failure = None
        flow = super()._auth_flow(request)
        step_up = False
        try:
            outgoing = await anext(flow)
            while True:
                response = yield outgoing
                step_up = step_up or (
                    response.status_code == 403
                    and extract_field_from_www_auth(response, "error") == "insufficient_scope"
                )
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        except OAuthFlowError as exc:
            self.flow_failure = exc
            if step_up:  # the SDK has joined the scope asked for before to the one the server named
                self.wanted_scope = self.context.client_metadata.scope
            raise
        finally:
            await flow.aclose()

    async def _handle_refresh_response(self, response: httpx2.Response) -> bool:
        refreshed = await super()._handle_refresh_response(response)
        if not refreshed:
            body = (await response.aread()).decode("utf-8", "replace")[:200]
            self.refresh_failure = f"{response.status_code}: {body}" if body else str(response.status_code)
        return refreshed

    async def _handle_token_response(self, response: httpx2.Response) -> None:
        await super()._handle_token_response(response)
        self.refresh_failure = None


class MachineOAuth(KeptOAuth, ClientCredentialsOAuthProvider):
    """The SDK's client_credentials provider, with its client from the database (given or registered)."""

    def __init__(
        self, server_url: str, storage: StoredCredentials, oauth: OAuthConfig, pinned: str | None
    ) -> None:
        with warnings.catch_warnings():
            # No issuer given: the first discovered one is pinned below, which is what the warning asks for.
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            ClientCredentialsOAuthProvider.__init__(
                self,
                server_url,
                storage,
                # The parent's fixed client is never used: _initialize reads the kept one instead.
                client_id=oauth.client_id or "registered-dynamically",
                client_secret="",
                token_endpoint_auth_method=oauth.token_endpoint_auth_method,
                scope=oauth.scope,
                issuer=oauth.issuer or pinned,
            )
        self.context.client_metadata.client_name = "aigrid"
        self.oauth = oauth
        self.credentials = storage

    @property
    def issuer(self) -> str | None:
        """The authorization server token requests may go to: configured, pinned, or not yet known."""
        return self._issuer

    async def _handle_token_response(self, response: httpx2.Response) -> None:
        await super()._handle_token_response(response)
        metadata = self.context.oauth_metadata
        if self._issuer is None and metadata is not None:
            # Trust on first use: later token requests go only to this authorization server.
            self._issuer = str(metadata.issuer)
            await self.credentials.pin_issuer(self._issuer)


class BrowserOAuth(KeptOAuth):
    """The SDK's authorization-code provider (PKCE): an admin's login starts it, refresh tokens go on.

    Without a ``login`` (a provider in use) it only uses and refreshes the kept tokens; a full
    authorization then fails, and the error says to log in again.
    """

    def __init__(
        self,
        server_url: str,
        storage: StoredCredentials,
        oauth: OAuthConfig,
        login: LoginHandlers | None,
        wanted_scope: str | None = None,
    ) -> None:
        metadata = OAuthClientMetadata.model_validate(_client_fields(oauth) | {"client_name": "aigrid"})
        redirect, callback = (None, None) if login is None else (login.redirect, login.callback)
        super().__init__(
            server_url, metadata, storage, redirect, callback, client_metadata_url=oauth.client_metadata_url
        )
        self.oauth = oauth
        self.credentials = storage
        self._asked = union_scopes(oauth.scope, wanted_scope)

    async def _perform_authorization(self) -> httpx2.Request:
        # The SDK asks for the scope the server's challenge names: the configured one and the one a
        # server wanted for a call (a step-up) are asked for too.
        self.context.client_metadata.scope = union_scopes(self.context.client_metadata.scope, self._asked)
        return await super()._perform_authorization()


class LoginHandlers(Protocol):
    """Where the authorization URL goes, and where the code the admin brings back comes from."""

    async def redirect(self, url: str) -> None:
        """Hand the authorization URL to the admin."""

    async def callback(self) -> AuthorizationCodeResult:
        """Wait for the code (and state) the authorization server sent the browser back with."""


def oauth_client(
    server_url: str, storage: StoredCredentials, oauth: OAuthConfig, pinned: str | None
) -> KeptOAuth:
    """The SDK provider for a provider in use: client_credentials, or the tokens of an admin's login."""
    if oauth.grant == "client_credentials":
        return MachineOAuth(server_url, storage, oauth, pinned)
    return BrowserOAuth(server_url, storage, oauth, None)


def _flow_errors(exc: BaseException) -> Iterator[OAuthFlowError]:
    """The OAuth errors inside an exception: its groups' members, causes and contexts."""
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OAuthFlowError):
            yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def is_oauth_failure(exc: BaseException) -> bool:
    """Whether OAuth failing to get a token is what the exception comes from."""
    return next(_flow_errors(exc), None) is not None


def oauth_failure(exc: BaseException, auth: KeptOAuth) -> str | None:
    """Why OAuth got no token, and what the admin can do; None when OAuth was not what failed."""
    error = next(_flow_errors(exc), None)
    if error is None:
        return None
    said = str(error)[:300]
    oauth = auth.oauth
    if isinstance(error, OAuthRegistrationError):
        return (
            f"registering an OAuth client dynamically failed ({said}): give the provider an oauth "
            "client_id and client_secret made for it on the authorization server"
        )
    pinned = isinstance(auth, MachineOAuth) and auth.issuer is not None
    if pinned and ("issuer mismatch" in said or "for configured issuer" in said):
        origin = "configured one" if oauth.issuer else "one pinned at the first token"
        return (
            f"the server sent aigrid to another authorization server than the {origin} "
            f"({auth.issuer}): {said}; if that is expected, add the provider again"
        )
    if "issuer mismatch" in said:
        # RFC 8414 section 3.3: metadata naming another issuer than the one it was fetched for is refused.
        return (
            f"the authorization server's metadata names another issuer than the one it was looked up "
            f"for ({said}), so aigrid does not trust it (RFC 8414 section 3.3): its OAuth setup needs fixing"
        )
    expired = ""
    if auth.refresh_failure is not None:
        expired = f"the token expired and refreshing it failed ({auth.refresh_failure}); "
    if "No redirect handler" in said:
        login = f"it needs an admin to log in: run `aigrid tool login {auth.credentials.provider}`"
        if auth.wanted_scope is not None:
            login += f" (the server wants the scope '{auth.wanted_scope}', which the login asks for)"
        return f"{expired}{login}"
    if isinstance(error, OAuthTokenError):
        who = "the oauth client_id and client_secret" if oauth.client_id else "the registered client"
        return f"{expired}the authorization server gave no token ({said}): check {who} and the scope"
    return f"{expired}OAuth failed: {said}"
