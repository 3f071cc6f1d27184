"""`aigrid mcp` against a live server: MCP clients list and call a tenant's agents and the grid's chat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, LoggingMessageNotificationParams, TextContent, TextResourceContents
from tests.support import (
    ADMIN_KEY,
    LiveServer,
    RecordingUpstream,
    check_a_lost_stream_resumes_in_its_own_session_only,
    check_streams_start_primed,
    free_port,
    wait_for_port,
)

from aigrid.cli.mcp_events import RETRY_MS

pytestmark = pytest.mark.slow


def save_agent(server: LiveServer, key: str, **spec: Any) -> None:
    spec = {"instructions": "Help.", "model": "mock", **spec}
    saved = httpx.post(
        server.url + "/v1/agents", json=spec, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert saved.status_code == 201, saved.text


def mcp_env(server: LiveServer, **extra: str) -> dict[str, str]:
    """What `aigrid mcp` needs to find the server; no admin key unless given."""
    env = {k: v for k, v in os.environ.items() if k not in ("AIGRID_ADMIN_KEY", "AIGRID_API_KEY")}
    return {**env, "AIGRID_URL": server.url, "PYTHONDONTWRITEBYTECODE": "1", **extra}


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": function}],
    }


async def test_stdio_serves_the_tenants_agents_and_chat(
    server: LiveServer, upstream: RecordingUpstream
) -> None:
    server.new_tenant_key("acme")
    save_agent(server, ADMIN_KEY, tenant="acme", name="writer", description="Writes short poems.")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "aigrid", "mcp", "--tenant", "acme"],
        env=mcp_env(server, AIGRID_ADMIN_KEY=ADMIN_KEY),
    )
    async with Client(params, cache=None) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"agent_writer", "chat"}
        assert tools["agent_writer"].description == "Writes short poems."
        assert tools["agent_writer"].input_schema["required"] == ["input"]
        assert "mock" in (tools["chat"].description or "")

        save_agent(server, ADMIN_KEY, tenant="acme", name="late")
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert "'late'" in (tools["agent_late"].description or ""), "an agent made after the start appears"

        upstream.script[:] = [{"role": "assistant", "content": "Roses are red."}]
        ran = await client.call_tool("agent_writer", {"input": "a poem"})
        assert not ran.is_error and text(ran) == "Roses are red."
        assert upstream.requests[-1]["messages"][-1] == {"role": "user", "content": "a poem"}

        upstream.script[:] = [{"role": "assistant", "content": "Hello there."}]
        chat = await client.call_tool("chat", {"prompt": "hello", "model": "mock"})
        assert not chat.is_error and text(chat) == "Hello there."

        no_model = await client.call_tool("chat", {"prompt": "hello"})  # "local" is not served here
        assert no_model.is_error and "local" in text(no_model)
        ghost = await client.call_tool("agent_ghost", {"input": "boo"})
        assert ghost.is_error and "No agent named 'ghost'" in text(ghost)


@pytest.mark.filterwarnings("ignore:The logging capability is deprecated")  # 2025-11-25 clients use it
async def test_stdio_with_the_admin_key_logs_reports_and_reads_the_named_tenants_things(
    server: LiveServer, upstream: RecordingUpstream
) -> None:
    server.new_tenant_key("stark")
    save_agent(server, ADMIN_KEY, tenant="stark", name="clock", tools=["time.now"])
    server.new_tenant_key("hammer")
    save_agent(server, ADMIN_KEY, tenant="hammer", name="rival")
    started = server.admin(
        "POST", "/v1/processes", json={"agent": "rival", "input": "hi", "tenant": "hammer"}
    )
    rivals = started.json()["pid"]
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "aigrid", "mcp", "--tenant", "stark"],
        env=mcp_env(server, AIGRID_ADMIN_KEY=ADMIN_KEY),
    )
    logged: list[str] = []
    reported: list[float] = []

    async def log(params: LoggingMessageNotificationParams) -> None:
        logged.append(f"{params.level} {params.data['message']}")

    async def progress(done: float, total: float | None, message: str | None) -> None:
        reported.append(done)

    async with Client(params, cache=None, mode="legacy", logging_callback=log) as client:
        await client.set_logging_level("debug")
        upstream.script[:] = [tool_call("time__now", {}), {"role": "assistant", "content": "Noon."}]
        ran = await client.call_tool("agent_clock", {"input": "time?"}, progress_callback=progress)
        assert text(ran) == "Noon." and reported[0] == 0 and reported[-1] == 7
        assert logged[:3] == [
            "debug asking the model (2 messages, 4 tools)",
            "info the model calls time__now",
            "info calling time.now",
        ]

        spec = (await client.read_resource("aigrid://agents/clock")).contents[0]
        assert isinstance(spec, TextResourceContents) and json.loads(spec.text)["tenant"] == "stark"
        journals = [r for r in (await client.list_resources()).resources if "journal" in str(r.uri)]
        assert len(journals) == 1, "only the named tenant's processes"
        theirs = f"aigrid://processes/{rivals}/journal"
        with pytest.raises(MCPError, match="Resource not found") as raised:
            await client.read_resource(theirs)
        assert raised.value.data == {"uri": theirs}, "the admin key reads no other tenant's journal here"


@contextmanager
def http_mcp_of(server: LiveServer, key: str, logs: Path) -> Iterator[str]:
    """`aigrid mcp --http` for the tenant of ``key`` (no admin key anywhere): its URL while it runs."""
    port = free_port()
    log = (logs / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aigrid", "mcp", "--http", str(port)],
        env=mcp_env(server, AIGRID_API_KEY=key),
        stderr=log,
    )
    try:
        wait_for_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def http_mcp(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`aigrid mcp --http` for tenant globex, found by its own key."""
    key = server.new_tenant_key("globex")
    save_agent(server, key, name="broken", model="no-such-model")
    save_agent(server, key, name="careful", tools=["notify.owner"], approval=["notify.owner"])
    with http_mcp_of(server, key, tmp_path_factory.mktemp("mcp-http")) as url:
        yield url


async def test_http_reports_failures_as_tool_errors(http_mcp: str, upstream: RecordingUpstream) -> None:
    async with Client(http_mcp, cache=None) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"agent_broken", "agent_careful", "chat"}, "only globex's own agents"

        failed = await client.call_tool("agent_broken", {"input": "go"})
        assert failed.is_error and "failed" in text(failed) and "no-such-model" in text(failed)

        upstream.script[:] = [tool_call("notify__owner", {"text": "may I?"})]
        waiting = await client.call_tool("agent_careful", {"input": "go"})
        assert waiting.is_error and "approval" in text(waiting)
        assert "aigrid approve " in text(waiting) and "process " in text(waiting)

        unknown = await client.call_tool("nope", {})
        assert unknown.is_error and "Unknown tool: nope" in text(unknown)
        empty = await client.call_tool("agent_broken", {"input": " "})
        assert empty.is_error and "'input'" in text(empty)


async def test_http_streams_start_with_a_priming_event_and_a_retry_time(http_mcp: str) -> None:
    await check_streams_start_primed(http_mcp, RETRY_MS)


async def test_http_replays_a_lost_stream_from_last_event_id_to_its_own_session_only(http_mcp: str) -> None:
    await check_a_lost_stream_resumes_in_its_own_session_only(http_mcp)


def test_a_server_it_cannot_reach_or_name_is_a_cli_error(server: LiveServer, dead_url: str) -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aigrid", "mcp", *args],
            env={**mcp_env(server), **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    down = run("--tenant", "acme", AIGRID_URL=dead_url.removesuffix("/v1"), AIGRID_ADMIN_KEY=ADMIN_KEY)
    assert down.returncode == 1 and "cannot reach aigrid" in down.stderr, down.stderr
    assert down.stdout == "" and "Traceback" not in down.stderr
    nobody = run("--tenant", "nobody", AIGRID_ADMIN_KEY=ADMIN_KEY)
    assert nobody.returncode == 1 and "No tenant named 'nobody'" in nobody.stderr
    unnamed = run()
    assert unnamed.returncode == 2 and "--tenant" in unnamed.stderr
