"""`aigrid mcp`: an agent run as a tool tells its client how far it is and what it does, as it goes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp_types import LoggingMessageNotificationParams
from tests.cli.test_mcp_server import http_mcp_of, save_agent, text, tool_call
from tests.support import ADMIN_KEY, LiveServer, RecordingUpstream

pytestmark = pytest.mark.slow

ANSWER = {"role": "assistant", "content": "It is late."}


@pytest.fixture(scope="module")
def mcp_url(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`aigrid mcp --http` for tenant umbrella: agents that read the clock, may not, fail, or ask first."""
    key = server.new_tenant_key("umbrella")
    save_agent(server, key, name="clock", tools=["time.now"])
    save_agent(server, key, name="unlicensed")  # granted no tool: a call to one is refused
    save_agent(server, key, name="broken", model="no-such-model")
    save_agent(server, key, name="careful", tools=["notify.owner"], approval=["notify.owner"])
    with http_mcp_of(server, key, tmp_path_factory.mktemp("mcp-notifications")) as url:
        yield url


class Logs:
    """The log messages a client was sent."""

    def __init__(self) -> None:
        self.got: list[LoggingMessageNotificationParams] = []

    async def __call__(self, params: LoggingMessageNotificationParams) -> None:
        self.got.append(params)

    def lines(self) -> list[tuple[str, str]]:
        """Each message's level and text."""
        return [(p.level, str(p.data["message"])) for p in self.got]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_progress_counts_the_journals_steps_and_ends_with_a_total(
    mcp_url: str, upstream: RecordingUpstream, mode: Any
) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, total, message))

    upstream.script[:] = [tool_call("time__now", {}), ANSWER]
    async with Client(mcp_url, cache=None, mode=mode) as client:
        ran = await client.call_tool("agent_clock", {"input": "what time is it?"}, progress_callback=progress)
        assert not ran.is_error and text(ran) == "It is late."

        done = [p for p, _, _ in seen]
        assert done == sorted(set(done)), f"each notification is further than the last: {seen}"
        assert seen[0][0] == 0 and re.fullmatch(r"process p-[0-9a-f]+ started", str(seen[0][2]))
        assert all(total is None for _, total, _ in seen[:-1]), "no total while it runs"
        # Each notification names the newest step read: the last, the model's answer (step 6 of
        # request, answer, tool call, result, request, answer); then the end itself, one more.
        assert seen[-2] == (6, None, "the model answered") and seen[-1] == (7, 7, "done"), seen

        quiet = await client.call_tool("agent_clock", {"input": "again"})  # no token: no progress asked
        assert not quiet.is_error and len(seen) == len(done)


# The SDK's client warns that 2026-07-28 drops logging/setLevel; clients of 2025-11-25 still send it.
@pytest.mark.filterwarnings("ignore:The logging capability is deprecated")
async def test_log_messages_follow_the_level_set_with_logging_set_level(
    mcp_url: str, upstream: RecordingUpstream
) -> None:
    logs = Logs()
    async with Client(mcp_url, cache=None, mode="legacy", logging_callback=logs) as client:
        assert client.server_capabilities.logging is not None

        upstream.script[:] = [tool_call("time__now", {}), ANSWER]
        await client.call_tool("agent_clock", {"input": "what time is it?"})
        assert logs.lines() == [
            ("info", "the model calls time__now"),
            ("info", "calling time.now"),
            ("info", "time.now answered"),
            ("info", "the model answered"),
        ], "from info up until a level is set"
        first = logs.got[0]
        assert first.logger == "agent:clock" and first.data["kind"] == "model_response"
        assert re.fullmatch(r"p-[0-9a-f]+", first.data["pid"]) and first.data["step"] == 2

        logs.got.clear()
        await client.set_logging_level("debug")
        upstream.script[:] = [ANSWER]
        await client.call_tool("agent_clock", {"input": "now?"})
        assert logs.lines() == [
            ("debug", "asking the model (2 messages, 4 tools)"),
            ("info", "the model answered"),
        ]

        logs.got.clear()
        await client.set_logging_level("warning")
        upstream.script[:] = [ANSWER]
        await client.call_tool("agent_clock", {"input": "now?"})
        assert logs.got == [], "nothing below warning"
        upstream.script[:] = [tool_call("time__now", {}), ANSWER]
        await client.call_tool("agent_unlicensed", {"input": "now?"})
        assert logs.lines() == [
            ("warning", "time.now failed: refused: agent 'unlicensed' is not granted the tool 'time.now'")
        ]


async def test_a_2026_client_gets_log_messages_only_when_its_requests_ask(
    mcp_url: str, upstream: RecordingUpstream
) -> None:
    asked, unasked = Logs(), Logs()
    async with Client(mcp_url, cache=None, log_level="info", logging_callback=asked) as client:
        assert client.protocol_version == "2026-07-28"
        upstream.script[:] = [ANSWER]
        await client.call_tool("agent_clock", {"input": "now?"})
    assert asked.lines() == [("info", "the model answered")]
    async with Client(mcp_url, cache=None, logging_callback=unasked) as client:
        upstream.script[:] = [ANSWER]
        await client.call_tool("agent_clock", {"input": "now?"})
    assert unasked.got == [], "the 2026 protocol sends no log message a request did not opt in to"


async def test_a_wait_for_approval_and_a_failure_are_logged_with_what_to_do(
    mcp_url: str, upstream: RecordingUpstream
) -> None:
    logs = Logs()
    async with Client(mcp_url, cache=None, mode="legacy", logging_callback=logs) as client:
        upstream.script[:] = [tool_call("notify__owner", {"text": "may I?"})]
        waiting = await client.call_tool("agent_careful", {"input": "go"})
        level, line = logs.lines()[-1]
        approval = re.search(r"`aigrid approve (p-[0-9a-f]+:\d+)`", line)
        assert level == "notice" and "notify.owner waits for a person's approval" in line and approval
        assert waiting.is_error and f"aigrid approve {approval[1]}" in text(waiting)

        failed = await client.call_tool("agent_broken", {"input": "go"})
        level, line = logs.lines()[-1]
        assert failed.is_error and level == "error"
        assert line.startswith("the process failed: ") and "no-such-model" in line


async def state_of(server: LiveServer, pid: str, state: str) -> dict[str, Any]:
    """The process once it is in ``state``, which the server changes with no event to wait on."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as http:
        async with asyncio.timeout(15):
            while True:
                process: dict[str, Any] = (await http.get(f"{server.url}/v1/processes/{pid}")).json()
                if process["state"] == state:
                    return process
                await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_call_the_client_cancels_kills_its_process(
    server: LiveServer, mcp_url: str, upstream: RecordingUpstream, mode: Any
) -> None:
    started: list[str] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        if done == 0:
            started.append(str(message).split()[1])

    upstream.delay_s = 5.0  # the model takes its time: the call is cancelled while it thinks
    try:
        async with Client(mcp_url, cache=None, mode=mode) as client:
            with anyio.move_on_after(1.5) as waited:
                await client.call_tool("agent_clock", {"input": "slowly"}, progress_callback=progress)
            assert waited.cancelled_caught and len(started) == 1
            killed = await state_of(server, started[0], "killed")
            assert killed["reason"] == "killed by a signal"
    finally:
        upstream.delay_s = 0.0
