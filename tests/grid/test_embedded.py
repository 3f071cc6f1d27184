"""The embedded backend against the real SmolLM2 model: answers, tools, streams, limits, embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pytest
import pytest_asyncio
from openai.types import Completion as OpenAICompletion
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from tests.support import NO_END

from aigrid.config import DeploymentConfig
from aigrid.errors import APIError
from aigrid.grid.backends.base import BackendError, StreamSession
from aigrid.grid.backends.embedded import EmbeddedBackend
from aigrid.grid.backends.embedded_prompt import chat_messages

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MODEL = "smollm2-test"
# One thread: on a small shared machine, llama.cpp's spinning threads slow each other down.
CONFIG = DeploymentConfig(backend="embedded", context_length=2048, threads=1)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 40}},
            "required": ["timezone"],
        },
    },
}


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


# 300 levels of objects: Python's recursion gave out inside the grammar's converter at 250.
DEEP = nested(300)
ASK_WEATHER = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[EmbeddedBackend]:
    b = EmbeddedBackend("embedded-test", CONFIG)
    await b.start()
    yield b
    await b.close()


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "temperature": 0, **extra}


async def ask(backend: EmbeddedBackend, body: dict[str, Any]) -> ChatCompletion:
    completion = await backend.complete("chat", body, MODEL)
    answer = ChatCompletion.model_validate_json(completion.body)
    assert answer.usage is not None
    assert completion.usage.prompt_tokens == answer.usage.prompt_tokens
    assert completion.usage.completion_tokens == answer.usage.completion_tokens
    return answer


async def read(session: StreamSession) -> list[dict[str, Any]]:
    chunks = []
    async for frame in session.frames():
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        assert frame != b"data: [DONE]\n\n"
        chunks.append(orjson.loads(frame[6:]))
    return chunks


def check_call(call: Any, tool: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments, after checking them against the tool's schema by hand."""
    schema = tool["function"]["parameters"]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == tool["function"]["name"]
    arguments: dict[str, Any] = json.loads(call.function.arguments)
    assert set(schema["required"]) <= set(arguments) <= set(schema["properties"])
    for key, value in arguments.items():
        prop = schema["properties"][key]
        assert isinstance(value, str)
        assert len(value) <= prop.get("maxLength", len(value))
        assert value in prop.get("enum", [value])
    return arguments


async def test_plain_chat(backend: EmbeddedBackend) -> None:
    body = chat("What is the capital of France?", max_tokens=12)
    answer = await ask(backend, body)
    choice = answer.choices[0]
    assert answer.model == MODEL and answer.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length") and choice.message.tool_calls is None
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == await backend.count_prompt_tokens("chat", body)
    assert 0 < answer.usage.completion_tokens <= 12


async def test_stop_sequence_cuts_the_answer(backend: EmbeddedBackend) -> None:
    free = (await ask(backend, chat("Tell me about the sea.", max_tokens=16))).choices[0].message.content
    assert free is not None and " " in free.strip()
    word = free.split()[2]
    cut = await ask(backend, chat("Tell me about the sea.", max_tokens=16, stop=["zzz", word]))
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == free[: free.index(word)]


async def test_seed_makes_sampling_repeatable(backend: EmbeddedBackend) -> None:
    body = chat("Tell me a story.", max_tokens=12, temperature=1.0, seed=7)
    first = await ask(backend, body)
    second = await ask(backend, body)
    assert first.choices[0].message.content == second.choices[0].message.content


async def test_json_object_parses(backend: EmbeddedBackend) -> None:
    body = chat(
        'Return a JSON object with the key "answer" holding the capital of France.',
        max_tokens=48,
        response_format={"type": "json_object"},
    )
    answer = await ask(backend, body)
    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)


async def test_json_schema_is_followed(backend: EmbeddedBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    body = chat(
        "Invent a person and give their name and age.",
        max_tokens=48,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    answer = await ask(backend, body)
    person = json.loads(answer.choices[0].message.content or "")
    assert set(person) == {"name", "age"}
    assert isinstance(person["name"], str) and len(person["name"]) <= 20
    assert isinstance(person["age"], int) and not isinstance(person["age"], bool)


async def test_tool_choice_required_calls_a_tool(backend: EmbeddedBackend) -> None:
    body = {"messages": ASK_WEATHER, "temperature": 0, "max_tokens": 64, "tools": [WEATHER, CLOCK]}
    answer = await ask(backend, {**body, "tool_choice": "required"})
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    tool = WEATHER if call.function.name == "get_weather" else CLOCK  # type: ignore[union-attr]
    check_call(call, tool)


async def test_named_tool_choice_calls_that_tool(backend: EmbeddedBackend) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    body = {"messages": ASK_WEATHER, "temperature": 0, "max_tokens": 64, "tools": [WEATHER, CLOCK]}
    answer = await ask(backend, {**body, "tool_choice": named})
    calls = answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason == "tool_calls" and calls is not None
    check_call(calls[0], CLOCK)


async def test_tool_choice_none_answers_in_text(backend: EmbeddedBackend) -> None:
    body = {"messages": ASK_WEATHER, "temperature": 0, "max_tokens": 12, "tools": [WEATHER]}
    answer = await ask(backend, {**body, "tool_choice": "none"})
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].message.content


async def test_tool_choice_auto_gives_text_or_a_valid_call(backend: EmbeddedBackend) -> None:
    body = {"messages": ASK_WEATHER, "temperature": 0, "max_tokens": 64, "tools": [WEATHER]}
    choice = (await ask(backend, body)).choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        check_call(choice.message.tool_calls[0], WEATHER)
    else:
        assert choice.message.content and not choice.message.content.startswith("<")


async def test_conversation_with_a_tool_result(backend: EmbeddedBackend) -> None:
    messages = [
        *ASK_WEATHER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18, "sky": "sunny"}'},
    ]
    rendered = chat_messages(messages, None)
    assert [m["role"] for m in rendered] == ["user", "assistant", "user"]
    assert rendered[1]["content"].startswith("<tool_call>\n") and '"city": "Paris"' in rendered[1]["content"]
    assert rendered[2]["content"] == '<tool_response>\n{"temperature": 18, "sky": "sunny"}\n</tool_response>'
    # The model tends to call again; a stop sequence must not cut that call short.
    body = {"messages": messages, "temperature": 0, "max_tokens": 64, "tools": [WEATHER], "stop": ["\n"]}
    choice = (await ask(backend, body)).choices[0]
    if choice.message.tool_calls:
        check_call(choice.message.tool_calls[0], WEATHER)
    else:
        assert choice.message.content and not choice.message.content.startswith("<")


async def test_content_parts_are_joined_and_images_refused(backend: EmbeddedBackend) -> None:
    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]
    assert chat_messages([{"role": "user", "content": parts}], None)[0]["content"] == "Hello\nthere"
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with pytest.raises(APIError) as info:
        await backend.complete("chat", {"messages": [{"role": "user", "content": [image]}]}, MODEL)
    assert info.value.status == 400 and info.value.param == "messages"


async def test_stream_frames(backend: EmbeddedBackend) -> None:
    body = chat("Say hello.", max_tokens=8)
    session = await backend.open_stream("chat", body, MODEL, include_usage=True)
    chunks = await read(session)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert "usage" in chunk
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    *body_chunks, last, usage_chunk = chunks
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["choices"][0]["finish_reason"] is None for c in body_chunks)
    assert all(c["usage"] is None for c in [*body_chunks, last])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] <= 8
    assert usage_chunk["usage"]["prompt_tokens"] == await backend.count_prompt_tokens("chat", body)
    assert session.progress.usage.completion_tokens == usage_chunk["usage"]["completion_tokens"]
    assert session.progress.first_token_at is not None and session.progress.finished

    quiet = await read(await backend.open_stream("chat", body, MODEL, include_usage=False))
    assert all("usage" not in c for c in quiet)
    assert quiet[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in quiet)
    assert text == "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])


async def test_stream_tool_call(backend: EmbeddedBackend) -> None:
    body = {
        "messages": ASK_WEATHER,
        "temperature": 0,
        "max_tokens": 64,
        "tools": [WEATHER],
        "tool_choice": "required",
    }
    chunks = await read(await backend.open_stream("chat", body, MODEL, include_usage=False))
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    calls = [tc for p in parsed for tc in p.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id and calls[0].type == "function"
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    assert set(json.loads(calls[0].function.arguments or "")) == {"city", "unit"}
    assert parsed[-1].choices[0].finish_reason == "tool_calls"
    assert not any(p.choices[0].delta.content for p in parsed)


async def test_close_stops_the_stream_and_frees_the_worker(backend: EmbeddedBackend) -> None:
    body = {"prompt": "Count from one to one thousand: one, two, three,", "max_tokens": 400, "temperature": 0}
    session = await backend.open_stream("completions", body, MODEL, include_usage=False)
    seen = 0
    async for _frame in session.frames():
        seen += 1
        if seen == 3:
            session.close()
    # The worker drops the job at its next token, so the stream ends long before 400 tokens.
    assert session.progress.usage.completion_tokens < 20
    assert not session.progress.finished
    answer = await asyncio.wait_for(ask(backend, chat("Hi", max_tokens=4)), timeout=30)
    assert answer.choices[0].message.content is not None


async def test_prompt_beyond_the_context_is_refused(backend: EmbeddedBackend) -> None:
    huge = chat("word " * 3000)
    assert ((await backend.count_prompt_tokens("chat", huge)) or 0) > CONFIG.context_length
    far = chat("word " * 2_000_000)  # more characters than any tokens of the context could cover
    with pytest.raises(APIError) as info:
        await backend.count_prompt_tokens("chat", far)
    assert info.value.code == "context_length_exceeded" and "needs" in info.value.message
    with pytest.raises(APIError) as info:
        await backend.complete("chat", huge, MODEL)
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"
    with pytest.raises(APIError) as info:
        await backend.open_stream("chat", chat("Hi", max_tokens=CONFIG.context_length), MODEL, False)
    assert info.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": [50, 10]}, "logit_bias"),
        ({"logit_bias": {"hello": 10}}, "logit_bias"),
        ({"logit_bias": {"-5": 10}}, "logit_bias"),
        ({"logit_bias": {"50": 101}}, "logit_bias"),
        ({"logit_bias": {"50": "up"}}, "logit_bias"),
        ({"logit_bias": {"999999": 5}}, "logit_bias"),
        ({"logit_bias": {str(t): 1 for t in range(1025)}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 3}, "top_p"),
        ({"stop": 5}, "stop"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"seed": 1.5}, "seed"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nope"}}}},
            "response_format",
        ),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": DEEP}}}, "response_format"),
        (
            # 70 levels: deeper than the converter is given, short enough for the prompt.
            {"tools": [{"type": "function", "function": {"name": "deep", "parameters": nested(70)}}]},
            "tools",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "web_search"}]}, "tools"),
    ],
)
async def test_bad_parameters_are_named(backend: EmbeddedBackend, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as info:
        await backend.complete("chat", chat("Hi", **extra), MODEL)
    assert info.value.status == 400 and info.value.param == param


async def test_logit_bias_bans_and_forces_tokens(backend: EmbeddedBackend) -> None:
    plain = await ask(backend, chat("Say hi.", max_tokens=60))
    assert plain.choices[0].finish_reason == "stop", "the model ends its answer on its own"
    banned = await ask(backend, chat("Say hi.", max_tokens=60, **NO_END))
    assert banned.choices[0].finish_reason == "length", "with its end tokens banned it runs to the cap"
    assert banned.usage is not None and banned.usage.completion_tokens == 60
    forced = await ask(backend, chat("Say hi.", max_tokens=5, temperature=1, logit_bias={"74": 100}))
    assert forced.choices[0].message.content == "Z" * 5, "a +100 bias picks that token every time"


async def test_presence_and_frequency_penalties_steer_away_from_repeats(backend: EmbeddedBackend) -> None:
    prompt = "Write the word apple ten times."
    plain = await ask(backend, chat(prompt, max_tokens=30, temperature=0))
    for penalty in ("presence_penalty", "frequency_penalty"):
        steered = await ask(backend, chat(prompt, max_tokens=30, temperature=0, **{penalty: 2.0}))
        assert steered.choices[0].message.content != plain.choices[0].message.content, penalty
        again = await ask(backend, chat(prompt, max_tokens=30, temperature=0, **{penalty: 2.0}))
        assert again.choices[0].message.content == steered.choices[0].message.content, "still greedy"


async def test_harmless_fields_are_ignored(backend: EmbeddedBackend) -> None:
    extra = {"user": "u1", "metadata": {"a": "b"}, "store": False, "parallel_tool_calls": True, "n": 1}
    answer = await ask(backend, chat("Hi", max_tokens=2, stream=False, service_tier="auto", **extra))
    assert answer.choices[0].message.content is not None


async def test_malformed_requests_count_as_unknown(backend: EmbeddedBackend) -> None:
    assert await backend.count_prompt_tokens("chat", {"messages": "hi"}) is None
    assert await backend.count_prompt_tokens("completions", {"prompt": [1, 2, 3]}) is None
    assert await backend.count_prompt_tokens("embeddings", {"input": ["a", "bb"]}) == 2


async def test_full_queue_is_a_retryable_503() -> None:
    small = EmbeddedBackend("embedded-small", CONFIG.model_copy(update={"queue_size": 1}))
    await small.start()
    try:
        body: dict[str, Any] = {
            "prompt": "Count to a thousand: one, two,",
            "max_tokens": 200,
            "temperature": 0,
        }
        running = await small.open_stream("completions", body, MODEL, include_usage=False)
        frames = running.frames()
        await anext(frames)  # the first token: the worker has taken this job off the queue
        waiting = await small.open_stream("completions", body, MODEL, include_usage=False)
        with pytest.raises(BackendError) as info:
            await small.complete("completions", body, MODEL)
        assert info.value.status == 503 and info.value.retryable
        running.close()
        waiting.close()
        async for _frame in frames:
            pass
        # Both places are free again: the worker skips the abandoned job that was waiting.
        short = {**body, "max_tokens": 2}
        assert (await small.complete("completions", short, MODEL)).usage.completion_tokens <= 2
    finally:
        await small.close()


async def test_missing_model_file_fails_at_start(tmp_path: Any) -> None:
    missing = tmp_path / "nope.gguf"
    broken = EmbeddedBackend("embedded-missing", CONFIG.model_copy(update={"model_path": str(missing)}))
    with pytest.raises(FileNotFoundError, match=str(missing)):
        await broken.start()


async def test_embeddings(backend: EmbeddedBackend) -> None:
    completion = await backend.complete("embeddings", {"input": ["hello world", "the sea"]}, MODEL)
    result = CreateEmbeddingResponse.model_validate_json(completion.body)
    assert result.model == MODEL and [d.index for d in result.data] == [0, 1]
    assert {len(d.embedding) for d in result.data} == {576}
    assert abs(float(np.linalg.norm(result.data[0].embedding)) - 1) < 1e-3
    assert result.usage.prompt_tokens == completion.usage.prompt_tokens == 4

    encoded = await backend.complete(
        "embeddings", {"input": "hello world", "encoding_format": "base64"}, MODEL
    )
    packed = base64.b64decode(orjson.loads(encoded.body)["data"][0]["embedding"])
    assert np.allclose(np.frombuffer(packed, dtype="<f4"), result.data[0].embedding, atol=1e-6)

    refused: list[tuple[dict[str, Any], str]] = [
        ({"input": [[1, 2, 3]]}, "input"),
        ({"input": ""}, "input"),
        ({"input": "hi", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "hi", "dimensions": 64}, "dimensions"),
    ]
    for body, param in refused:
        with pytest.raises(APIError) as info:
            await backend.complete("embeddings", body, MODEL)
        assert info.value.param == param


async def test_completions_endpoint(backend: EmbeddedBackend) -> None:
    prompt = "The capital of France is"
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": 6, "temperature": 0}
    completion = await backend.complete("completions", body, MODEL)
    answer = OpenAICompletion.model_validate_json(completion.body)
    assert answer.object == "text_completion" and answer.model == MODEL
    assert answer.choices[0].text and answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None and answer.usage.prompt_tokens == await backend.count_prompt_tokens(
        "completions", body
    )

    echoed = orjson.loads((await backend.complete("completions", {**body, "echo": True}, MODEL)).body)
    assert echoed["choices"][0]["text"] == prompt + answer.choices[0].text

    chunks = await read(await backend.open_stream("completions", body, MODEL, include_usage=True))
    # OpenAI streams finish_reason null until the end, which its own Completion model does not admit.
    OpenAICompletion.model_validate(chunks[-2])
    assert all(
        c["object"] == "text_completion" and c["choices"][0]["finish_reason"] is None for c in chunks[:-2]
    )
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == answer.choices[0].text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 6

    refused: list[tuple[dict[str, Any], str]] = [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"suffix": "x"}, "suffix"),
        ({"best_of": 2}, "best_of"),
    ]
    for extra, param in refused:
        with pytest.raises(APIError) as info:
            await backend.complete("completions", {**body, **extra}, MODEL)
        assert info.value.param == param
