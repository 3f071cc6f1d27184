"""An admin's OAuth login for an MCP provider (authorization code with PKCE), in two steps.

The SDK runs the whole grant inside one HTTP request's auth flow, waiting on a redirect handler and
a callback handler. aigrid's admin is not at the server, so the flow runs in a task: its redirect
handler hands the authorization URL to the first step's answer, and its callback handler waits for
the second step, which brings the address the browser was sent back to (or its code and state).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp.client.auth import AuthorizationCodeResult

from aigrid.config import OAuthConfig
from aigrid.kernel.providers.base import ProviderError
from aigrid.kernel.providers.oauth import BrowserOAuth, StoredCredentials, oauth_failure

# Any MCP request that the server refuses without a token starts the grant; a ping is the smallest.
_PING = {"jsonrpc": "2.0", "id": "aigrid-login", "method": "ping"}
_MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class LoginError(ProviderError):
    """A login that could not start or finish, with the reason for the admin."""


def code_from(redirect_url: str) -> AuthorizationCodeResult:
    """The code, state and issuer in the address the browser was sent back to; the server's refusal raises."""
    query = {k: v[0] for k, v in parse_qs(urlparse(redirect_url).query).items() if v}
    if "error" in query:
        said = query.get("error_description", "")
        raise LoginError(f"the authorization server refused: {query['error']}{f' ({said})' if said else ''}")
    if "code" not in query:
        raise LoginError("the address has no code: paste the whole address the browser was sent to")
    return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))


class Login:
    """One provider's login in progress: the grant waiting in a task for the admin's code."""

    def __init__(
        self,
        url: str,
        storage: StoredCredentials,
        oauth: OAuthConfig,
        timeout_s: float,
        wanted_scope: str | None = None,
    ) -> None:
        self._url = url
        self._storage = storage
        self._timeout_s = timeout_s
        loop = asyncio.get_running_loop()
        self._authorization: asyncio.Future[str] = loop.create_future()
        self._code: asyncio.Future[AuthorizationCodeResult] = loop.create_future()
        self._auth = BrowserOAuth(url, storage, oauth, self, wanted_scope)
        self._task: asyncio.Task[None] | None = None

    async def redirect(self, url: str) -> None:
        """The SDK's redirect handler: the URL goes to the admin."""
        if not self._authorization.done():
            self._authorization.set_result(url)

    async def callback(self) -> AuthorizationCodeResult:
        """The SDK's callback handler: the code the admin brings back."""
        return await self._code

    async def start(self) -> str:
        """Forget the old tokens, start the grant, and return the URL the admin opens in a browser."""
        await self._storage.drop_tokens()
        self._task = asyncio.create_task(self._drive(), name=f"oauth-login:{self._storage.provider}")
        task = self._task
        # A plain wait on two futures of different types: the URL comes, or the task ends first.
        pending: set[asyncio.Future[None]] = {task, asyncio.ensure_future(self._wait_url())}
        await asyncio.wait(pending, timeout=self._timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            if future is not task:
                future.cancel()
        if self._authorization.done():
            return self._authorization.result()
        if task.done():
            failed = None if task.cancelled() else task.exception()
            raise self._failure(failed, "the server did not ask for a login")
        await self.cancel()
        raise LoginError(f"the authorization server did not answer within {self._timeout_s:g} s")

    async def _wait_url(self) -> None:
        await asyncio.shield(self._authorization)

    async def finish(self, code: AuthorizationCodeResult) -> None:
        """Hand the code to the grant and wait for the tokens (kept by the SDK through the storage)."""
        if self._task is None:
            raise LoginError("no login was started")
        if not self._code.done():
            self._code.set_result(code)
        try:
            async with asyncio.timeout(self._timeout_s):
                await asyncio.shield(self._task)
        except TimeoutError:
            await self.cancel()
            raise LoginError(f"the token did not come within {self._timeout_s:g} s") from None
        except Exception as exc:
            raise self._failure(exc, "") from exc
        if await self._storage.get_tokens() is None:
            raise LoginError("the login ended without a token")

    async def cancel(self) -> None:
        """Give up the grant (a new login, or the provider removed)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def _failure(self, exc: BaseException | None, otherwise: str) -> LoginError:
        why = None if exc is None else oauth_failure(exc, self._auth)
        return LoginError(why or (f"{type(exc).__name__}: {exc}" if exc else otherwise))

    async def _drive(self) -> None:
        async with httpx2.AsyncClient(auth=self._auth, timeout=self._timeout_s) as http:
            # The answer does not matter: the tokens are what the auth flow was for.
            await http.post(self._url, content=json.dumps(_PING), headers=_MCP_HEADERS)
