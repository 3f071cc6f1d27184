"""The bounded event store behind resumable MCP streams (`aigrid mcp --http`, the example services)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import httpx
from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCNotification
from starlette.types import Receive, Scope, Send

from aigrid.cli import mcp_events
from aigrid.cli.mcp_events import BoundedEventStore

SERVICES = Path(__file__).resolve().parents[2] / "examples" / "services"


def note(text: str) -> JSONRPCNotification:
    return JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"data": text})


async def replay(store: BoundedEventStore, last_event_id: str) -> tuple[str | None, list[EventMessage]]:
    """What the store replays after ``last_event_id``: the stream's id and the events sent."""
    sent: list[EventMessage] = []

    async def send(event: EventMessage) -> None:
        sent.append(event)

    return await store.replay_events_after(last_event_id, send), sent


def texts(sent: list[EventMessage]) -> list[str]:
    return [event.message.params["data"] for event in sent if isinstance(event.message, JSONRPCNotification)]


async def test_event_ids_increase_and_name_their_stream() -> None:
    store = BoundedEventStore()
    ids = [
        await store.store_event("1", None),
        await store.store_event("2", None),
        await store.store_event("1", note("a")),
        await store.store_event("2", note("b")),
    ]
    streams, numbers = zip(*(event_id.split("-") for event_id in ids), strict=True)
    assert streams[0] == streams[2] != streams[1] == streams[3]
    assert [int(n) for n in numbers] == sorted({int(n) for n in numbers})


async def test_replay_sends_only_the_later_messages_of_that_stream_without_priming_events() -> None:
    store = BoundedEventStore()
    primed = await store.store_event("7", None)
    first = await store.store_event("7", note("first"))
    await store.store_event("8", note("elsewhere"))
    await store.store_event("7", None)  # a resumed stream is primed again
    second = await store.store_event("7", note("second"))

    assert await replay(store, primed) == (
        "7",
        [EventMessage(note("first"), first), EventMessage(note("second"), second)],
    )
    stream, sent = await replay(store, first)
    assert stream == "7" and texts(sent) == ["second"]
    assert await replay(store, second) == ("7", [])


async def test_a_stream_keeps_its_latest_events_and_refuses_a_replay_that_lost_some() -> None:
    store = BoundedEventStore(per_stream=3)
    ids = [await store.store_event("1", None)] + [
        await store.store_event("1", note(str(n))) for n in range(4)
    ]
    assert await replay(store, ids[0]) == (None, []), "the first message after the priming event is gone"
    assert await replay(store, ids[1]) == ("1", [EventMessage(note(str(n)), ids[n + 1]) for n in (1, 2, 3)])
    stream, sent = await replay(store, ids[3])
    assert stream == "1" and texts(sent) == ["3"]


async def test_the_oldest_streams_are_dropped_first() -> None:
    store = BoundedEventStore(streams=2)
    old, middle = await store.store_event("1", note("old")), await store.store_event("2", note("middle"))
    assert (await replay(store, old))[0] == "1"
    newest = await store.store_event("3", note("new"))
    assert await replay(store, old) == (None, [])
    assert (await replay(store, middle))[0] == "2" and (await replay(store, newest))[0] == "3"
    later = await store.store_event("1", note("again"))  # a dropped stream's id starts a new stream
    assert later.split("-")[0] != old.split("-")[0]
    assert await replay(store, old) == (None, [])


async def test_an_unknown_id_replays_nothing() -> None:
    store = BoundedEventStore()
    known = await store.store_event("1", note("kept"))
    await store.store_event("1", note("after"))
    stream_number = known.split("-")[0]
    for unknown in ("", "junk", "99-1", f"{stream_number}-", f"-{stream_number}", f"{stream_number}-x"):
        assert await replay(store, unknown) == (None, []), unknown


async def test_guard_replays_a_stream_to_the_session_that_stored_it_only() -> None:
    """Through `guard` the store tells sessions apart, though the SDK names every session's streams alike."""
    store = BoundedEventStore()
    stored: dict[str, str] = {}

    async def sdk(scope: Scope, receive: Receive, send: Send) -> None:
        """Stands in for the SDK's app: /open/<sid> stores a stream "1" and answers with its new session;
        /replay/<sid> replays after the first event that /open/<sid> stored."""
        headers: list[tuple[bytes, bytes]] = []
        if scope["path"].startswith("/open/"):
            session = scope["path"].removeprefix("/open/")
            stored[session] = await store.store_event("1", note(f"for {session}"))
            await store.store_event("1", note(f"later for {session}"))
            headers = [(b"mcp-session-id", session.encode())]
            body: object = None
        else:
            stream, sent = await replay(store, stored[scope["path"].removeprefix("/replay/")])
            body = [stream, texts(sent)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})

    transport = httpx.ASGITransport(app=store.guard(sdk))
    async with httpx.AsyncClient(transport=transport, base_url="http://mcp.test") as http:
        for session in ("a", "b"):
            (await http.post(f"/open/{session}")).raise_for_status()

        async def replayed(stored_by: str, headers: dict[str, str]) -> object:
            return (await http.get(f"/replay/{stored_by}", headers=headers)).json()

        assert await replayed("a", {"Mcp-Session-Id": "a"}) == ["1", ["later for a"]]
        assert await replayed("b", {"Mcp-Session-Id": "b"}) == ["1", ["later for b"]]
        assert await replayed("a", {"Mcp-Session-Id": "b"}) == [None, []]
        assert await replayed("a", {"Mcp-Session-Id": "nobody"}) == [None, []]
        assert await replayed("a", {}) == [None, []]


def test_the_example_services_use_this_file_which_imports_nothing_from_aigrid() -> None:
    assert (SERVICES / "mcp_events.py").resolve() == Path(mcp_events.__file__).resolve()
    tree = ast.parse(Path(mcp_events.__file__).read_text(encoding="utf-8"))
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert not {name for name in imported if name.split(".")[0] == "aigrid"}
