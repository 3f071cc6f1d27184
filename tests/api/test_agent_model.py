"""Agents as models on a live server: the openai client calls ``agent:NAME`` like any model."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from tests.support import LiveServer, RecordingUpstream

pytestmark = pytest.mark.slow


def new_agent(server: LiveServer, key: str, name: str, **spec: Any) -> None:
    body = {"name": name, "instructions": "Help.", "model": "mock", **spec}
    made = httpx.post(
        server.url + "/v1/agents", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert made.status_code == 201, made.text


def test_the_openai_client_gets_an_agents_answer_and_usage(
    server: LiveServer, upstream: RecordingUpstream
) -> None:
    key = server.new_tenant_key("acme")
    new_agent(server, key, "helper")
    client = server.openai(key)

    upstream.script[:] = [{"role": "assistant", "content": "Paris."}]
    raw = client.chat.completions.with_raw_response.create(
        model="agent:helper",
        messages=[
            {"role": "user", "content": "Capital of Italy?"},
            {"role": "assistant", "content": "Rome."},
            {"role": "user", "content": [{"type": "text", "text": "And of France?"}]},
        ],
    )
    answer = raw.parse()
    pid = raw.headers["x-aigrid-process"]
    assert answer.id == f"chatcmpl-{pid}" and answer.model == "agent:helper"
    assert answer.choices[0].message.content == "Paris." and answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (
        10,
        2,
        12,
    )
    sent = upstream.requests[-1]["messages"][-1]["content"]
    assert "Conversation so far:\nuser: Capital of Italy?\nassistant: Rome.\n\nNow: And of France?" in sent

    upstream.script[:] = [{"role": "assistant", "content": "Berlin."}]
    stream = client.chat.completions.create(
        model="agent:helper",
        messages=[{"role": "user", "content": "Capital of Germany?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Berlin."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12

    usage = httpx.get(server.url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert usage.json()["totals"]["requests"] == 2, "only the processes' own model calls are metered"


def test_models_list_each_tenants_own_agents(server: LiveServer) -> None:
    key = server.new_tenant_key("initech")
    other = server.new_tenant_key("globex")
    new_agent(server, key, "lister")
    mine = {m.id for m in server.openai(key).models.list()}
    assert "agent:lister" in mine and "mock" in mine
    assert "agent:lister" not in {m.id for m in server.openai(other).models.list()}
    assert not any(m.id.startswith("agent:") for m in server.openai().models.list()), "the admin has none"
    assert server.openai(key).models.retrieve("agent:lister").owned_by == "initech"
    with pytest.raises(openai.NotFoundError):
        server.openai(other).models.retrieve("agent:lister")


def test_a_process_waiting_for_approval_answers_at_once(
    server: LiveServer, upstream: RecordingUpstream
) -> None:
    key = server.new_tenant_key("umbrella")
    new_agent(server, key, "careful", tools=["notify.owner"], approval=["notify.owner"])
    function = {"name": "notify__owner", "arguments": '{"text": "hello"}'}
    call = {"id": "c1", "type": "function", "function": function}
    upstream.script[:] = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    raw = server.openai(key).chat.completions.with_raw_response.create(
        model="agent:careful", messages=[{"role": "user", "content": "Tell the owner."}]
    )
    pid = raw.headers["x-aigrid-process"]
    content = raw.parse().choices[0].message.content or ""
    assert "approval" in content and f"aigrid approve {pid}:" in content and "aigrid approvals" in content


def test_unknown_agents_bad_bodies_and_failed_processes_are_openai_errors(server: LiveServer) -> None:
    key = server.new_tenant_key("cyberdyne")
    new_agent(server, key, "broken", model="no-such-model")
    client = server.openai(key)
    hello: Any = [{"role": "user", "content": "hi"}]
    for model in ("agent:ghost", "agent:Not A Name"):
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model=model, messages=hello)
        assert missing.value.code == "model_not_found" and model in missing.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="agent:broken", messages=[{"role": "system", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="agent:broken", messages=[])
    headers = {"Authorization": f"Bearer {key}"}
    bad = httpx.post(
        server.url + "/v1/chat/completions", json={"model": 5, "messages": hello}, headers=headers
    )
    assert bad.status_code == 400 and "error" in bad.json()

    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="agent:broken", messages=hello)
    assert failed.value.status_code == 502 and failed.value.code == "agent_failed"
    assert "no-such-model" in failed.value.message
    with pytest.raises(openai.APIError, match="no-such-model"):
        list(client.chat.completions.create(model="agent:broken", messages=hello, stream=True))
