"""A bounded in-memory MCP event store, so a client that loses an SSE stream can resume it.

With an event store the SDK starts each SSE stream with a priming event (an id, empty data and
a ``retry`` field) and keeps every message it sends, so a client that reconnects with
``Last-Event-ID`` gets what it missed. The SDK gives one store to all sessions and names a stream
by its request id, which every session reuses: serve the app through ``guard`` so each session's
streams are replayed to that session alone.

Imports nothing from aigrid: the example services use this very file, through the link
``examples/services/mcp_events.py``.
"""

from __future__ import annotations

import itertools
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from weakref import WeakValueDictionary

from mcp.server.streamable_http import (
    MCP_SESSION_ID_HEADER,
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamId,
)
from mcp_types import JSONRPCMessage
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# How long a client waits before it reconnects to a lost stream: soon enough that a tool call's
# answer is not held up noticeably, late enough that a server restarting or under load is not
# hammered by every client at once.
RETRY_MS = 3000
EVENTS_PER_STREAM = 64  # a tool call's stream holds its answer and a few notifications
STREAMS = 256  # a stream is one request: only the recent ones are worth resuming


class _Session:
    """One MCP session, as the requests of ``guard`` know it: its identity is all it has."""


# The session of the request being served, set by `guard`; None when the app is not guarded.
_SESSION: ContextVar[_Session | None] = ContextVar("mcp_event_session", default=None)


@dataclass
class _Stream:
    key: StreamId  # the SDK's name for it: a request id, or the standalone GET stream's
    number: int
    session: _Session | None
    events: deque[tuple[int, JSONRPCMessage | None]] = field(default_factory=deque)
    dropped: int = 0  # the newest event dropped for the per-stream bound


class BoundedEventStore(EventStore):
    """The latest events of the latest streams: at most ``per_stream`` a stream, ``streams`` in all."""

    def __init__(self, per_stream: int = EVENTS_PER_STREAM, streams: int = STREAMS) -> None:
        if per_stream < 1 or streams < 1:
            raise ValueError("an event store keeps at least one event of at least one stream")
        self._per_stream, self._max_streams = per_stream, streams
        self._streams: dict[tuple[_Session | None, StreamId], _Stream] = {}  # oldest first
        self._numbered: dict[int, _Stream] = {}
        self._counter = itertools.count(1)
        self._sessions: WeakValueDictionary[str, _Session] = WeakValueDictionary()

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Keep ``message`` (None for a priming event) and return its id: ``<stream>-<n>``, n ever larger."""
        session = _SESSION.get()
        stream = self._streams.get((session, stream_id))
        if stream is None:
            stream = _Stream(stream_id, next(self._counter), session)
            self._streams[(session, stream_id)] = self._numbered[stream.number] = stream
            if len(self._streams) > self._max_streams:
                oldest = next(iter(self._streams.values()))
                del self._streams[(oldest.session, oldest.key)], self._numbered[oldest.number]
        number = next(self._counter)
        stream.events.append((number, message))
        if len(stream.events) > self._per_stream:
            stream.dropped = stream.events.popleft()[0]
        return f"{stream.number}-{number}"

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        """Send the messages of ``last_event_id``'s stream stored after it, and return that stream's id.

        None, and nothing sent, when the id is unknown, of another session, or of a stream that has
        since been dropped or has lost events after it.
        """
        stream_number, _, after = last_event_id.partition("-")
        if not (stream_number.isdecimal() and after.isdecimal()):
            return None
        stream = self._numbered.get(int(stream_number))
        if stream is None or stream.session is not _SESSION.get() or int(after) < stream.dropped:
            return None
        # A copy: sending waits for the client, and the stream may take new events meanwhile.
        later = [(n, message) for n, message in stream.events if n > int(after) and message is not None]
        for n, message in later:
            await send_callback(EventMessage(message, f"{stream.number}-{n}"))
        return stream.key

    def guard(self, app: ASGIApp) -> ASGIApp:
        """``app`` (the SDK's streamable HTTP app) with each session's streams replayed to it alone."""

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            named = Headers(scope=scope).get(MCP_SESSION_ID_HEADER)
            session = (self._sessions.get(named) if named else None) or _Session()

            async def learn_new_session(message: Message) -> None:
                if named is None and message["type"] == "http.response.start":
                    opened = Headers(raw=message["headers"]).get(MCP_SESSION_ID_HEADER)
                    if opened:
                        self._sessions[opened] = session
                await send(message)

            # The SDK runs a new session's messages in a task started from the request that opened
            # it: that task, and so every event it stores, sees this same session.
            token = _SESSION.set(session)
            try:
                await app(scope, receive, learn_new_session)
            finally:
                _SESSION.reset(token)

        return guarded
