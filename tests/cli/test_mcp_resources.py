"""`aigrid mcp`'s resources (agents' specs, journals, inbox), prompts and completions, as clients see them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    EmbeddedResource,
    PromptReference,
    ResourceTemplateReference,
    TextContent,
    TextResourceContents,
)
from tests.cli.test_mcp_server import http_mcp_of, save_agent, text, tool_call
from tests.support import LiveServer, RecordingUpstream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tenant_key(server: LiveServer) -> str:
    """Tenant hooli's key; its agents write poems and leave notes."""
    key = server.new_tenant_key("hooli")
    save_agent(server, key, name="writer", description="Writes short poems.", instructions="Rhyme.")
    save_agent(server, key, name="noter", tools=["notify.owner"])
    return key


@pytest.fixture(scope="module")
def mcp_url(server: LiveServer, tenant_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`aigrid mcp --http` for tenant hooli."""
    with http_mcp_of(server, tenant_key, tmp_path_factory.mktemp("mcp-resources")) as url:
        yield url


async def read_json(client: Client, uri: str) -> Any:
    """A resource's one content, which is JSON."""
    contents = (await client.read_resource(uri)).contents
    assert len(contents) == 1 and isinstance(contents[0], TextResourceContents)
    assert contents[0].uri == uri and contents[0].mime_type == "application/json"
    return json.loads(contents[0].text)


async def missing(client: Client, uri: str) -> MCPError:
    """The error a read of ``uri`` gets."""
    with pytest.raises(MCPError) as raised:
        await client.read_resource(uri)
    return raised.value


async def test_resources_are_the_agents_specs_the_journals_and_the_inbox(
    server: LiveServer, mcp_url: str, upstream: RecordingUpstream
) -> None:
    async with Client(mcp_url, cache=None) as client:
        upstream.script[:] = [tool_call("notify__owner", {"text": "remember the milk"})]
        ran = await client.call_tool("agent_noter", {"input": "note it"})
        assert not ran.is_error, text(ran)

        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        journals = [uri for uri in listed if uri.startswith("aigrid://processes/")]
        assert {"aigrid://inbox", "aigrid://agents/writer", "aigrid://agents/noter"} <= set(listed)
        assert len(journals) == 1 and "agent 'noter'" in (listed[journals[0]].description or "")
        assert "Writes short poems." in (listed["aigrid://agents/writer"].description or "")
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {"aigrid://agents/{name}", "aigrid://processes/{pid}/journal"}

        writer = await read_json(client, "aigrid://agents/writer")
        assert writer["version"] == 1 and writer["spec"]["instructions"] == "Rhyme."

        journal = await read_json(client, journals[0])
        assert journal["agent"] == "noter" and journal["state"] == "done"
        assert [s["kind"] for s in journal["journal"]][:4] == [
            "model_request",
            "model_response",
            "tool_call",
            "tool_result",
        ]

        inbox = await read_json(client, "aigrid://inbox")
        assert [m["text"] for m in inbox["messages"]] == ["remember the milk"]
        assert inbox["messages"][0]["agent"] == "noter"


async def test_a_resource_that_names_nothing_of_the_tenants_is_not_found(
    server: LiveServer, mcp_url: str
) -> None:
    other = server.new_tenant_key("pied-piper")
    save_agent(server, other, name="secret")
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {other}"}, timeout=30) as http:
        started = await http.post(server.url + "/v1/processes", json={"agent": "secret", "input": "hi"})
    theirs = started.json()["pid"]
    async with Client(mcp_url, cache=None) as client:
        for uri, why in [
            ("aigrid://agents/ghost", "No agent named 'ghost'"),
            ("aigrid://agents/secret", "No agent named 'secret'"),  # another tenant's
            (f"aigrid://processes/{theirs}/journal", theirs),
            ("aigrid://processes/p-0000/journal", "p-0000"),
            ("aigrid://agents/Not A Name", "aigrid serves aigrid://inbox"),
            ("file:///etc/passwd", "aigrid serves aigrid://inbox"),
        ]:
            error = await missing(client, uri)
            assert error.code == INVALID_PARAMS and error.data == {"uri": uri}, (uri, error)
            assert error.message.startswith(f"Resource not found: {uri} (") and why in error.message
        assert (await client.list_tools()).tools, "the session goes on after the errors"


async def test_prompts_run_write_and_explain_agents(mcp_url: str, upstream: RecordingUpstream) -> None:
    async with Client(mcp_url, cache=None) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert set(prompts) == {"run_agent", "new_agent", "explain_process"}
        assert [(a.name, a.required) for a in prompts["run_agent"].arguments or []] == [
            ("agent", True),
            ("input", True),
        ]

        run = await client.get_prompt("run_agent", {"agent": "writer", "input": "a poem about rain"})
        ask, spec = run.messages
        assert isinstance(ask.content, TextContent) and "`agent_writer`" in ask.content.text
        assert ask.content.text.endswith("a poem about rain")
        assert (
            isinstance(spec.content, EmbeddedResource)
            and spec.content.resource.uri == "aigrid://agents/writer"
        )

        new = (await client.get_prompt("new_agent", {"description": "Watch a price daily"})).messages
        assert isinstance(new[0].content, TextContent)
        assert "Watch a price daily" in new[0].content.text and "Models: mock" in new[0].content.text
        assert '"name": "time.now"' in new[0].content.text, "the tools the agent may be granted"

        upstream.script[:] = [{"role": "assistant", "content": "Rain, rain."}]
        await client.call_tool("agent_writer", {"input": "rain"})
        pid = next(
            str(r.uri).split("/")[3]
            for r in (await client.list_resources()).resources
            if str(r.uri).startswith("aigrid://processes/") and "agent 'writer'" in (r.description or "")
        )
        explained = (await client.get_prompt("explain_process", {"pid": pid})).messages
        journal = explained[1].content
        assert isinstance(journal, EmbeddedResource) and isinstance(journal.resource, TextResourceContents)
        assert json.loads(journal.resource.text)["result"] == "Rain, rain."


async def test_a_prompt_with_a_bad_name_or_argument_is_invalid_params(mcp_url: str) -> None:
    async with Client(mcp_url, cache=None) as client:
        for name, arguments, said in [
            ("run_agent", {"agent": "writer"}, "needs the argument(s) 'input'"),
            ("run_agent", {"agent": "writer", "input": "  "}, "needs the argument(s) 'input'"),
            ("run_agent", {"agent": "ghost", "input": "hi"}, "No agent named 'ghost' for this tenant"),
            ("run_agent", {"agent": "writer", "input": "hi", "mood": "sad"}, "takes no argument 'mood'"),
            ("explain_process", {"pid": "p-0000"}, "No process p-0000 for this tenant"),
            ("nope", {}, "Unknown prompt: nope"),
        ]:
            with pytest.raises(MCPError) as raised:
                await client.get_prompt(name, arguments)
            assert raised.value.code == INVALID_PARAMS and said in raised.value.message, raised.value


async def test_completion_offers_the_tenants_agent_names(mcp_url: str) -> None:
    async with Client(mcp_url, cache=None) as client:
        assert client.server_capabilities.completions is not None
        run = PromptReference(type="ref/prompt", name="run_agent")
        assert (await client.complete(run, {"name": "agent", "value": "wr"})).completion.values == ["writer"]
        assert (await client.complete(run, {"name": "input", "value": "wr"})).completion.values == []
        spec = ResourceTemplateReference(type="ref/resource", uri="aigrid://agents/{name}")
        offered = (await client.complete(spec, {"name": "name", "value": ""})).completion
        assert set(offered.values) == {"writer", "noter"} and offered.total == 2
        with pytest.raises(MCPError) as raised:
            await client.complete(PromptReference(type="ref/prompt", name="nope"), {"name": "x", "value": ""})
        assert raised.value.code == INVALID_PARAMS
