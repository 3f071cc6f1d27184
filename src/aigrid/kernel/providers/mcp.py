"""MCP servers as tool providers: one long-lived session per server, over stdio or streamable HTTP."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    INVALID_REQUEST,
    PARSE_ERROR,
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    RequestParamsMeta,
    ResourceLink,
    TextContent,
)
from mcp_types import Tool as McpTool

from aigrid.config import ProviderConfig
from aigrid.kernel.providers.base import ProviderError, tool_name
from aigrid.kernel.providers.oauth import (
    KeptOAuth,
    StoredCredentials,
    is_oauth_failure,
    oauth_client,
    oauth_failure,
)
from aigrid.kernel.tools import CallContext, Handler, Tool
from aigrid.store.provider_oauth import ProviderOAuthStore

logger = logging.getLogger(__name__)

# A tool argument of this name is filled from the call's idempotency key, never by the model.
IDEMPOTENCY_ARG = "idempotency_key"
IDEMPOTENCY_META = "aigrid/idempotency_key"
# A server whose cursors never end must not hang open().
_MAX_PAGES = 1000
# Time a session gets to wind down (stdio: stdin closed, then SIGTERM, then SIGKILL) before it is cancelled.
_STOP_GRACE_S = 10.0
# A tool's answer may stream for as long as the tool runs; the kernel's own time limit cuts it first.
_MIN_READ_TIMEOUT_S = 300.0
# What the SDK says in place of a failed HTTP answer's own words: the status tells more.
_SDK_STAND_INS = frozenset({"Server returned an error response", "Not Found", "Session terminated"})
# The longest piece of a server's own error text quoted to the admin.
_MAX_QUOTED = 200


class McpToolError(Exception):
    """An MCP tool that answered with an error result; the message is the tool's own text."""


class McpConnectionError(Exception):
    """A call whose connection to the MCP server was lost and could not be restored."""


class McpAuthError(Exception):
    """A call the MCP server refused because OAuth could not get (or renew) a token for it."""


def _innermost(exc: BaseException) -> BaseException:
    """The first exception inside task groups' exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _reason(exc: BaseException) -> str:
    """The first real cause inside an exception (task groups wrap them), as ``Type: message``."""
    exc = _innermost(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class _HttpAnswer:
    """The first HTTP answer to an MCP POST that was not MCP, which the SDK reports without its status."""

    url: str
    status: int | None = None
    reason: str = ""
    content_type: str = ""
    authenticate: str = ""

    async def record(self, response: httpx2.Response) -> None:
        """An httpx response hook: keep the first POST answered with an error status or with no MCP."""
        if response.request.method != "POST" or response.request.url != httpx2.URL(self.url):
            return  # the GET stream, the closing DELETE and OAuth's own requests are not the MCP answer
        status = response.status_code
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        not_mcp = 200 <= status < 300 and status != 202 and _carries_request(response.request)
        not_mcp = not_mcp and content_type not in ("application/json", "text/event-stream")
        if self.status in (401, 403) and 200 <= status < 300 and not not_mcp:
            self.status = None  # OAuth answered the challenge and the retry went through
        if self.status is not None:
            return
        if status >= 400 or not_mcp:
            self.status = status
            self.reason = response.reason_phrase
            self.content_type = content_type
            self.authenticate = response.headers.get("www-authenticate", "")


def _carries_request(request: httpx2.Request) -> bool:
    """Whether a POST carries a JSON-RPC request (which wants an answer), not a notification."""
    try:
        message = json.loads(request.content)
    except (httpx2.RequestNotRead, ValueError):
        return False
    return isinstance(message, dict) and message.get("id") is not None


def _challenge(header: str) -> str:
    """A WWW-Authenticate header in brief: its scheme and, per RFC 9728, where the resource's metadata is."""
    scheme = header.strip().split(" ", 1)[0].split(",", 1)[0]
    if not scheme:
        return ""
    found = re.search(r'resource_metadata=(?:"([^"]+)"|([^\s,]+))', header)
    metadata = f", resource metadata at {found.group(1) or found.group(2)}" if found else ""
    return f"WWW-Authenticate: {scheme}{metadata}"


def _header_hint(headers: dict[str, str], auth: KeptOAuth | None) -> str:
    if auth is not None:
        return "the OAuth token was refused: check the oauth scope and the client's rights on that server"
    if any(name.lower() == "authorization" for name in headers):
        return "the Authorization header it was registered with was refused: check the token"
    return (
        "configure OAuth for it (--oauth-client-id ID --oauth-client-secret SECRET, or --oauth alone "
        'to register a client dynamically; "oauth" through the admin API), or if it takes a fixed '
        "token, register it with a header: --header 'Authorization: Bearer TOKEN' (\"headers\")"
    )


def _status_reason(
    status: int, answer: _HttpAnswer, exc: BaseException, headers: dict[str, str], auth: KeptOAuth | None
) -> str:
    """Why an HTTP MCP server could not be used, from its status (and its own words, when it gave some)."""
    said = ""
    inner = _innermost(exc)
    if isinstance(inner, MCPError) and inner.message and inner.message not in _SDK_STAND_INS:
        said = f' (it said: "{inner.message[:_MAX_QUOTED]}")'
    answered = f"the server answered {status} {answer.reason}".rstrip()
    if status < 300:
        kind = answer.content_type or "no content type"
        return f"{answered} with {kind}, not MCP (check the URL, e.g. http://host/mcp)"
    failure = None if auth is None else oauth_failure(exc, auth)
    if status == 401:
        challenge = _challenge(answer.authenticate)
        wants = f"it wants authorization ({challenge})" if challenge else "it wants authorization"
        return f"{answered}{said}: {wants}; {failure or _header_hint(headers, auth)}"
    if status == 403:
        return f"{answered}{said}: access was refused; {failure or _header_hint(headers, auth)}"
    if status == 404:
        return f"{answered}{said}: no MCP endpoint at that URL (check the path, e.g. /mcp)"
    if status == 405:
        return f"{answered}{said}: it takes no MCP requests at that URL (check the path, e.g. /mcp)"
    return f"{answered}{said}"


def _http_reason(
    exc: BaseException, answer: _HttpAnswer, headers: dict[str, str], auth: KeptOAuth | None
) -> str:
    """Why an MCP server over HTTP could not be reached or used, in words an admin can act on."""
    if answer.status is not None:
        return _status_reason(answer.status, answer, exc, headers, auth)
    failure = None if auth is None else oauth_failure(exc, auth)
    if failure is not None:
        return failure
    inner = _innermost(exc)
    cause: BaseException | None = inner
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return f"its host name could not be resolved ({cause.strerror or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return "the connection was refused (is the server running, on that host and port?)"
        cause = cause.__cause__ or cause.__context__
    if isinstance(inner, MCPError) and inner.code == PARSE_ERROR:
        return f"its answer is not MCP (check the URL, e.g. http://host/mcp): {inner.message[:_MAX_QUOTED]}"
    return _reason(exc)


def _decoded_size(data: str) -> int:
    """The byte size of base64 data, without decoding it."""
    return max(0, len(data) * 3 // 4 - data[-2:].count("="))


def _content_text(block: ContentBlock) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent | AudioContent):
        return f"[{block.type} {block.mime_type}, {_decoded_size(block.data)} bytes]"
    if isinstance(block, EmbeddedResource):
        res = block.resource
        if isinstance(res, BlobResourceContents):
            return f"[resource {res.uri} {res.mime_type or ''}, {_decoded_size(res.blob)} bytes]"
        return res.text
    if isinstance(block, ResourceLink):
        return f"[resource link {block.uri}: {block.name}]"
    return f"[{getattr(block, 'type', 'content')}]"


def result_value(result: CallToolResult) -> str:
    """A tool result as text for the model; an error result raises ``McpToolError`` with its text."""
    text = "\n".join(t for t in (_content_text(b) for b in result.content) if t)
    if result.is_error:
        raise McpToolError(text or "the tool reported an error without a message")
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False, default=str)
    return text


def _is_connection_loss(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return False  # a slow tool, not a lost connection
    if isinstance(exc, MCPError):
        return exc.code == CONNECTION_CLOSED or (
            exc.code == INVALID_REQUEST and "session terminated" in str(exc).lower()
        )
    return isinstance(
        exc, anyio.ClosedResourceError | anyio.BrokenResourceError | httpx2.TransportError | OSError
    )


class _Session:
    """One live MCP session, held by a background task, since the SDK's contexts must exit where entered."""

    def __init__(self, opener: Callable[[], AbstractAsyncContextManager[Client]], label: str) -> None:
        self._opener = opener
        self._label = label
        self._stop = asyncio.Event()
        self.lost = False
        self.ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._hold(), name=f"mcp-session:{label}")

    @property
    def alive(self) -> bool:
        """Whether calls can still go through this session."""
        return not self.lost and not self.task.done()

    async def _hold(self) -> None:
        try:
            async with self._opener() as client:
                if not self.ready.done():
                    self.ready.set_result(client)
                await self._stop.wait()
        except Exception as exc:  # the session's end is reported to whoever waits, else logged
            if not self.ready.done():
                self.ready.set_exception(exc)
            elif not self._stop.is_set():
                logger.warning("mcp session %s ended: %s", self._label, _reason(exc))
        finally:
            self.lost = True
            if not self.ready.done():
                self.ready.cancel()

    async def stop(self) -> None:
        """End the session and wait for its task (and any child process) to finish."""
        self._stop.set()
        if not self.ready.done():
            self.task.cancel()  # still connecting: there is nothing to wind down gently
        _, pending = await asyncio.wait({self.task}, timeout=_STOP_GRACE_S)
        if pending:
            logger.warning(
                "mcp session %s did not stop within %g s; cancelling it", self._label, _STOP_GRACE_S
            )
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=_STOP_GRACE_S)
        if self.ready.done() and not self.ready.cancelled():
            self.ready.exception()  # retrieved, so asyncio does not report it as lost


class McpProvider:
    """Tools from one MCP server (a stdio command or a streamable HTTP URL) over one shared session."""

    def __init__(self, config: ProviderConfig, credentials: ProviderOAuthStore | None = None) -> None:
        if config.kind != "mcp":
            raise ValueError(f"McpProvider needs an 'mcp' provider, not '{config.kind}'")
        if config.oauth is not None and credentials is None:
            raise ValueError("an MCP provider with oauth needs the store its client and tokens are kept in")
        self.config = config
        self._credentials = credentials
        self._auth: KeptOAuth | None = None
        self._session: _Session | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def _label(self) -> str:
        return f"mcp provider '{self.config.name}'"

    async def open(self) -> list[Tool]:
        """Connect, list every tool (following cursors), and return them as kernel tools."""
        async with self._lock:
            self._closed = False
            if self._session is not None:
                await self._session.stop()
                self._session = None
            self._auth = await self._oauth()
            self._session, listed = await self._connect()
        tools: list[Tool] = []
        seen: set[str] = set()
        for listed_tool in listed:
            tool = self._tool(listed_tool)
            if tool.name in seen:
                logger.warning(
                    "%s: skipping '%s': its name clashes as '%s'", self._label, listed_tool.name, tool.name
                )
                continue
            seen.add(tool.name)
            tools.append(tool)
        return tools

    @property
    def wanted_scope(self) -> str | None:
        """The OAuth scope the server wanted for a call beyond the token's, which a new login asks for."""
        return None if self._auth is None else self._auth.wanted_scope

    async def close(self) -> None:
        """End the session (the stdio server exits); safe to call twice or after a failed open."""
        async with self._lock:
            self._closed = True
            session, self._session = self._session, None
        if session is not None:
            await session.stop()

    async def _oauth(self) -> KeptOAuth | None:
        """The SDK's OAuth provider for this server, its client brought in line with the config."""
        oauth, url = self.config.oauth, self.config.url
        if oauth is None or url is None or self._credentials is None:
            return None
        storage = StoredCredentials(self._credentials, self.config.name)
        await storage.seed(oauth)
        record = await storage.record()
        return oauth_client(url, storage, oauth, None if record is None else record.issuer)

    def _opener(self, answer: _HttpAnswer) -> AbstractAsyncContextManager[Client]:
        if self.config.url is None:
            command, *args = self.config.command
            # The SDK passes a safe subset of our environment (PATH, HOME, ...) and adds config.env to it,
            # so the server never sees the grid's own secrets.
            params = StdioServerParameters(command=command, args=args, env=dict(self.config.env))
            return Client(params, cache=None)
        return self._http_client(self.config.url, answer)

    @asynccontextmanager
    async def _http_client(self, url: str, answer: _HttpAnswer) -> AsyncIterator[Client]:
        timeout = httpx2.Timeout(self.config.timeout_s, read=max(_MIN_READ_TIMEOUT_S, self.config.timeout_s))
        hooks = {"response": [answer.record]}
        async with (
            httpx2.AsyncClient(
                headers=dict(self.config.headers), timeout=timeout, event_hooks=hooks, auth=self._auth
            ) as http,
            Client(streamable_http_client(url, http_client=http), cache=None) as client,
        ):
            yield client

    async def _connect(self) -> tuple[_Session, list[McpTool]]:
        """A new session with its tool listing, within the provider's time limit."""
        stdio = self.config.url is None
        where = f"'{' '.join(self.config.command)}'" if stdio else str(self.config.url)
        answer = _HttpAnswer(self.config.url or "")
        session = _Session(partial(self._opener, answer), self.config.name)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                client = await asyncio.shield(session.ready)
                listed = await _list_all(client)
        except TimeoutError:
            await session.stop()
            raise ProviderError(
                f"{self._label}: {where} did not answer within {self.config.timeout_s:g} s"
            ) from None
        except Exception as exc:
            await session.stop()
            if stdio:
                raise ProviderError(f"{self._label}: could not start {where}: {_reason(exc)}") from exc
            reason = _http_reason(exc, answer, self.config.headers, self._auth)
            raise ProviderError(f"{self._label}: could not connect to {where}: {reason}") from exc
        return session, listed

    async def _live_session(self, stale: _Session | None = None) -> _Session:
        """The current session, reconnecting when it is gone (or is ``stale``, the one a call just lost)."""
        current = self._session
        if current is not None and current.alive and current is not stale:
            return current
        async with self._lock:
            if self._closed:
                raise McpConnectionError(f"{self._label} is closed")
            current = self._session
            if current is not None and current.alive and current is not stale:
                return current  # another caller reconnected while this one waited
            if current is not None:
                await current.stop()
                self._session = None
            logger.info("%s: reconnecting", self._label)
            self._session, _ = await self._connect()
            return self._session

    async def _call(self, name: str, arguments: dict[str, Any], key: str) -> CallToolResult:
        meta = cast(RequestParamsMeta, {IDEMPOTENCY_META: key})
        session = await self._live_session()
        try:
            return await session.ready.result().call_tool(name, arguments, meta=meta)
        except Exception as exc:
            if session.alive and not _is_connection_loss(exc):
                raise
            session.lost = True
            auth = self._auth
            if auth is not None and auth.flow_failure is not None:
                # OAuth got no token for the call (the SDK ends the session): a new session would get none.
                why = oauth_failure(auth.flow_failure, auth)
                raise McpAuthError(
                    f"the server wants a new OAuth token and none could be had: {why}"
                ) from exc
            logger.warning("%s: connection lost during '%s': %s", self._label, name, _reason(exc))
        try:
            session = await self._live_session(stale=session)
        except ProviderError as exc:
            if is_oauth_failure(exc):
                raise McpAuthError(
                    f"the server wants a new OAuth token and none could be had: {exc}"
                ) from exc
            raise McpConnectionError(f"the connection was lost and reconnecting failed: {exc}") from exc
        try:
            return await session.ready.result().call_tool(name, arguments, meta=meta)
        except Exception as exc:
            if session.alive and not _is_connection_loss(exc):
                raise
            session.lost = True
            raise McpConnectionError(
                f"{self._label}: the connection was lost again after reconnecting: {_reason(exc)}"
            ) from exc

    def _tool(self, listed: McpTool) -> Tool:
        schema: dict[str, Any] = copy.deepcopy(listed.input_schema) if listed.input_schema else {}
        schema.setdefault("type", "object")
        properties = schema.get("properties")
        takes_key = isinstance(properties, dict) and IDEMPOTENCY_ARG in properties
        if takes_key:
            cast(dict[str, Any], properties).pop(IDEMPOTENCY_ARG)
            required = schema.get("required")
            if isinstance(required, list):
                schema["required"] = [r for r in required if r != IDEMPOTENCY_ARG]
                if not schema["required"]:
                    del schema["required"]  # older JSON Schema drafts forbid an empty list
        return Tool(
            name=tool_name(self.config.name, listed.name),
            description=listed.description or listed.title or listed.name,
            handler=self._handler(listed.name, takes_key),
            parameters=schema,
            timeout_s=self.config.timeout_s,
        )

    def _handler(self, name: str, takes_key: bool) -> Handler:
        async def handler(arguments: dict[str, Any], context: CallContext) -> str:
            args = dict(arguments)
            if takes_key:
                args[IDEMPOTENCY_ARG] = context.idempotency_key
            return result_value(await self._call(name, args, context.idempotency_key))

        return handler


async def _list_all(client: Client) -> list[McpTool]:
    tools: list[McpTool] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(_MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor or cursor in seen:
            break
        seen.add(cursor)
    return tools
