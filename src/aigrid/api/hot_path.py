"""The request path that carries tokens, as a bare ASGI app.

Chat, completions and embeddings are most of the traffic, and each layer of framework middleware
costs more than the work aigrid itself does per request, so these three routes are served here
and everything else falls through to the FastAPI app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from aigrid.api import agent_model
from aigrid.api import entry_model as entry_chat
from aigrid.api.agent_model import AGENT_PREFIX
from aigrid.api.entry_model import ENTRY_MODEL
from aigrid.api.request_body import MAX_BODY_BYTES, BodyParser, read_body
from aigrid.api.state import AppState
from aigrid.errors import APIError, bad_request, internal_error
from aigrid.grid.backends.base import Completion, Endpoint
from aigrid.grid.service import CallMeta
from aigrid.store.accounts import Principal
from aigrid.store.schema import LedgerEntry

log = logging.getLogger(__name__)

ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
# The ledger's column widths.
AGENT_MAX: int = LedgerEntry.__table__.c.agent.type.length  # type: ignore[attr-defined]
PROCESS_MAX: int = LedgerEntry.__table__.c.process_id.type.length  # type: ignore[attr-defined]
_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream")
_NO_CACHE = (b"cache-control", b"no-cache")
_INTERNAL = APIError(
    500, "The server failed to process the request.", type="server_error", code="internal_error"
)


class FrameStream(Protocol):
    """SSE frames to send (a metered upstream stream, an agent's answer), and how to give them up."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def abandon(self) -> None:
        """Give up the frames not sent."""


class HotPath:
    """Serves the token endpoints directly and hands every other request to ``app``."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._bodies = BodyParser()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            try:
                await self.app(scope, receive, send)
            finally:
                await self._bodies.aclose()
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = ENDPOINTS.get(scope.get("path", ""))
        if endpoint is None:
            await self._rest(scope, receive, send)
            return
        if scope["method"] != "POST":
            message = f"Method {scope['method']} is not allowed on {scope['path']}; use POST."
            refused = APIError(405, message, code="method_not_allowed", headers={"Allow": "POST"})
            await _send_error(send, refused)
            return
        try:
            await self._serve(endpoint, scope, receive, send)
        except APIError as exc:
            await _send_error(send, exc)
        except Exception:
            log.exception("unhandled error on %s", scope.get("path"))
            await _send_error(send, internal_error())

    async def _rest(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any other route, through the app; a crash it has answered does not close the connection."""
        sent = {"started": False, "complete": False}

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                sent["complete"] = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            # Starlette answers a crash with the app's 500 and raises it again, and uvicorn then
            # closes the connection: the client's next request on it would be reset. A complete
            # answer needs neither; a half-sent one must be cut off.
            if sent["complete"]:
                return
            if sent["started"]:
                raise
            log.exception("unhandled error on %s", scope.get("path"))
            await _send_error(send, internal_error())

    async def _serve(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        state: AppState = self.app.state.aigrid
        headers = dict(scope["headers"])
        principal = state.keyring.authenticate_header(headers.get(b"authorization"))
        raw = await read_body(receive, MAX_BODY_BYTES)
        body = await self._bodies.parse(raw)
        model = body.get("model") if type(body) is dict else None
        if type(model) is str and model.startswith(AGENT_PREFIX) and endpoint == "chat":
            await _serve_agent(state, principal, body, receive, send)
            return
        if model == ENTRY_MODEL and endpoint == "chat":
            await _serve_entry(state, principal, body, receive, send)
            return
        meta = CallMeta(
            agent=_header(headers, b"x-aigrid-agent", AGENT_MAX),
            process_id=_header(headers, b"x-aigrid-process", PROCESS_MAX),
        )
        request_id, result = await state.grid.request(principal, endpoint, body, meta)
        rid = (b"x-request-id", request_id.encode())
        if isinstance(result, Completion):
            await _send_json(send, result.body, rid)
            return
        await _stream(result, [_SSE, _NO_CACHE, rid], receive, send)


async def _serve_agent(
    state: AppState, principal: Principal, body: dict[str, Any], receive: Receive, send: Send
) -> None:
    """An ``agent:NAME`` model: a process of the caller's agent answers (see aigrid.api.agent_model)."""
    reply = await agent_model.answer(state, principal, body)
    pid = (b"x-aigrid-process", reply.pid.encode())
    if isinstance(reply.body, bytes):
        await _send_json(send, reply.body, pid)
        return
    await _stream(reply.body, [_SSE, _NO_CACHE, pid], receive, send)


async def _serve_entry(
    state: AppState, principal: Principal, body: dict[str, Any], receive: Receive, send: Send
) -> None:
    """The ``entry`` model: the super entry answers (see aigrid.api.entry_model)."""
    entry_id, reply = await entry_chat.answer(state.entries, principal, body)
    header = (b"x-aigrid-entry", entry_id.encode())
    if isinstance(reply, bytes):
        await _send_json(send, reply, header)
        return
    await _stream(reply, [_SSE, _NO_CACHE, header], receive, send)


async def _send_json(send: Send, body: bytes, header: tuple[bytes, bytes]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), header],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(headers: dict[bytes, bytes], name: bytes, limit: int) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    text = value.decode("latin-1")
    if len(text) > limit:
        raise bad_request(f"The {name.decode()} header must be at most {limit} characters.")
    return text


async def _stream(
    stream: FrameStream, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send
) -> None:
    """Send a stream, and stop producing it the moment the client goes away."""
    task = asyncio.current_task()
    assert task is not None
    gone = asyncio.Event()

    async def watch() -> None:
        message: Message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()
        gone.set()
        task.cancel()

    await send({"type": "http.response.start", "status": 200, "headers": headers})
    watcher = asyncio.ensure_future(watch())
    try:
        async for frame in stream:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        watcher.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not gone.is_set():
            raise
        task.uncancel()
    except Exception:
        # The status line is already sent: all that is left is to end the body.
        log.exception("stream failed")
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        watcher.cancel()
        stream.abandon()


async def _send_error(send: Send, exc: APIError) -> None:
    body = exc.to_json()
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
