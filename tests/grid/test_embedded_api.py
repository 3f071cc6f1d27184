"""The embedded model served by `aigrid serve` with no config, through the official openai client."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import openai
import pytest
from tests.support import ADMIN_KEY, LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("embedded")).start()
    yield srv
    srv.stop()


def test_llama_cpp_chatter_stays_out_of_the_server_log(server: LiveServer) -> None:
    assert "n_ctx_train" not in server.log() and "llama_context" not in server.log()


def test_models_lists_the_embedded_model_and_its_alias(server: LiveServer) -> None:
    ids = {m.id for m in server.openai().models.list()}
    assert {"smollm2-135m", "local"} <= ids


def test_chat_and_stream(server: LiveServer) -> None:
    client = server.openai()
    messages = [{"role": "user", "content": "Name a colour."}]
    reply = client.chat.completions.create(model="local", messages=messages, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert reply.choices[0].message.content and reply.model == "smollm2-135m"
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8
    chunks = list(
        client.chat.completions.create(
            model="local",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content, "temperature 0 streams what it answered whole"
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    final = chunks[-1].usage
    assert final is not None and 0 < final.completion_tokens <= 8
    assert final.prompt_tokens == reply.usage.prompt_tokens


def test_json_schema_and_tool_calls_are_well_formed(server: LiveServer) -> None:
    client = server.openai()
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Plan 3 days in Rome as JSON."}],
        max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": schema}},
    )
    parsed = json.loads(reply.choices[0].message.content or "")
    assert isinstance(parsed["city"], str) and isinstance(parsed["days"], int)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    called = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=tools,  # type: ignore[arg-type]
        tool_choice="required",
        max_tokens=40,
    )
    call = called.choices[0].message.tool_calls
    assert called.choices[0].finish_reason == "tool_calls" and call
    assert call[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(call[0].function.arguments)["city"], str)  # type: ignore[union-attr]


def test_completions_and_embeddings(server: LiveServer) -> None:
    client = server.openai()
    done = client.completions.create(model="local", prompt="One, two,", max_tokens=4, temperature=0)
    assert done.choices[0].text and done.usage is not None
    vectors = client.embeddings.create(model="local", input=["a cat", "a dog"], encoding_format="float")
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) > 100
    # The official client's default: it asks for base64 and decodes it (without strict validation).
    lenient = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY)
    decoded = lenient.embeddings.create(model="local", input=["a cat", "a dog"])
    assert decoded.data[0].embedding == pytest.approx(vectors.data[0].embedding, abs=1e-6)
    raw = server.admin(
        "POST", "/v1/embeddings", json={"model": "local", "input": "a cat", "encoding_format": "base64"}
    )
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == pytest.approx(
        vectors.data[0].embedding, abs=1e-6
    )


def test_prompt_beyond_the_context_is_refused_exactly(server: LiveServer) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        server.openai().chat.completions.create(
            model="local", messages=[{"role": "user", "content": "lorem ipsum " * 6000}], max_tokens=8
        )
    assert err.value.code == "context_length_exceeded"


def test_a_prompt_far_beyond_the_context_is_refused_without_reading_it(server: LiveServer) -> None:
    # 30 MB, under the body cap: more characters than the context's tokens could ever cover.
    huge = {"model": "local", "messages": [{"role": "user", "content": "lorem ipsum " * 2_500_000}]}
    with ThreadPoolExecutor(1) as pool:
        refused = pool.submit(server.admin, "POST", "/v1/chat/completions", json=huge)
        health = [server.admin("GET", "/healthz").status_code for _ in range(5)]
        answer = refused.result()
    assert health == [200] * 5, "the server answers others while the huge prompt is refused"
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "context_length_exceeded"
    needed = int(answer.json()["error"]["message"].split("needs ")[1].split()[0])
    assert needed > 8192, "the refusal names how many tokens it needs at least"


def test_the_ledger_meters_the_embedded_model(server: LiveServer) -> None:
    usage = server.admin("GET", "/v1/usage", params={"group_by": "model,endpoint"}).json()
    endpoints = {(r["model"], r["endpoint"]) for r in usage["data"]}
    assert {("smollm2-135m", "chat"), ("smollm2-135m", "embeddings")} <= endpoints
    assert usage["totals"]["completion_tokens"] > 0


def test_temperature_zero_answers_the_same_whatever_came_before(server: LiveServer) -> None:
    client = server.openai()

    def ask(text: str) -> str | None:
        reply = client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": text}], max_tokens=12, temperature=0
        )
        return reply.choices[0].message.content

    first = ask("Who wrote Hamlet?")
    assert ask("Who wrote Hamlet?") == first, "the cached prompt must not change the answer"
    ask("Describe the sea.")
    assert ask("Who wrote Hamlet?") == first


@contextmanager
def embedded_server(
    tmp_path_factory: pytest.TempPathFactory, model: str, fields: str
) -> Iterator[LiveServer]:
    """A server of its own with one embedded deployment of one thread and these extra fields."""
    config = f"""
[[models]]
name = "{model}"
[[models.deployments]]
backend = "embedded"
threads = 1
{fields}
"""
    srv = LiveServer(tmp_path_factory.mktemp(model), config).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_full_queue_answers_503_overloaded_and_nobody_hangs(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with embedded_server(tmp_path_factory, "tiny-queue", "context_length = 1024\nqueue_size = 1") as srv:
        client = srv.openai()

        def ask(_: int) -> str:
            try:
                client.chat.completions.create(
                    model="tiny-queue",
                    messages=[{"role": "user", "content": "Count to twenty."}],
                    max_tokens=24,
                )
            except openai.APIStatusError as exc:
                assert exc.status_code == 503 and exc.code == "overloaded", exc.message
                assert exc.response.headers["retry-after"] == "1"
                return "overloaded"
            return "ok"

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(ask, range(8)))
        assert "ok" in outcomes and "overloaded" in outcomes
        health = srv.admin("GET", "/admin/deployments").json()["data"][0]
        assert health["healthy"], "a busy deployment is not a broken one"
        assert ask(0) == "ok"


def test_cached_prompt_tokens_are_reported_and_billed_at_the_cached_price(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    prices = "input_price_per_mtok = 1000\ncached_input_price_per_mtok = 100\noutput_price_per_mtok = 2000"
    with embedded_server(tmp_path_factory, "priced", prices) as srv:
        client = srv.openai()
        system = "You answer questions about the town library, its books and its opening hours. " * 10

        def ask(question: str) -> tuple[int, int, int, int]:
            reply = client.chat.completions.create(
                model="priced",
                messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
                max_tokens=8,
                temperature=0,
            )
            usage = reply.usage
            assert usage is not None and usage.prompt_tokens_details is not None
            cost = srv.admin("GET", "/v1/usage").json()["totals"]["cost_micro"]
            return (
                usage.prompt_tokens,
                usage.prompt_tokens_details.cached_tokens or 0,
                usage.completion_tokens,
                cost,
            )

        prompt, cached, completion, cost = ask("When does it open?")
        assert cached == 0 and cost == prompt * 1000 + completion * 2000
        prompt, cached, completion, total = ask("Can I borrow films?")
        assert cached > 100, "the system prompt came from the cache"
        assert total - cost == (prompt - cached) * 1000 + cached * 100 + completion * 2000
        streamed = list(
            client.chat.completions.create(
                model="priced",
                messages=[{"role": "system", "content": system}, {"role": "user", "content": "Is it free?"}],
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        final = streamed[-1].usage
        assert final is not None and final.prompt_tokens_details is not None
        assert (final.prompt_tokens_details.cached_tokens or 0) > 100
        rows = srv.admin("GET", "/v1/usage").json()["totals"]
        assert rows["cached_tokens"] == cached + (final.prompt_tokens_details.cached_tokens or 0)


def test_the_engine_shows_its_sequences_in_the_admin_api_and_metrics(server: LiveServer) -> None:
    system = "You are a patient tutor of geography who answers in one sentence. " * 6
    client = server.openai()
    client.chat.completions.create(
        model="local",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Name a river."}],
        max_tokens=4,
    )
    engine = server.admin("GET", "/admin/deployments").json()["data"][0]["engine"]
    assert engine["running"] == 0 and engine["waiting"] == 0
    assert engine["cached_sequences"] >= 1 and engine["cached_tokens"] > 60
    metrics = server.admin("GET", "/metrics").text
    assert 'aigrid_engine_sequences{deployment="embedded-smollm2",state="cached"}' in metrics
    assert 'aigrid_engine_cached_tokens{deployment="embedded-smollm2"}' in metrics
