"""The engine benchmark's HTTP client: chat completions sent to aigrid and streams read cheaply."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httptools
import httpx
import orjson

MODEL = "smollm2-135m"
# Filler prose for prompts of a chosen length; a random tag at the start makes each prefix new.
FILLER_TEXT = (
    "The lighthouse stood on a narrow cape where the wind never rested. Every evening the keeper "
    "climbed the spiral stairs, trimmed the wick, polished the great lens and wrote the weather in "
    "a worn leather log. Ships passed far out on the grey water, their lamps small as stars, and "
    "none of them knew his name. In winter the storms came from the north and the waves broke over "
    "the rocks below the tower, throwing spray against the windows of the lamp room. In summer the "
    "fog rolled in each morning and the horn sounded every thirty seconds until noon. He kept a cat, "
    "a garden of onions and potatoes behind the cottage, and a shelf of books he had read many times."
)
FILLER = FILLER_TEXT.split()
GENERATE_TASK = "Continue this story at length, in many long paragraphs, with dialogue."
SUFFIXES = (
    "Question: in one sentence, what did the keeper write in his log?",
    "Question: in one sentence, where did the storms come from in winter?",
    "Question: in one sentence, what grew in the garden behind the cottage?",
    "Question: in one sentence, how often did the horn sound in the fog?",
)
CROWD_PROMPT = "Say hello to the keeper of the lighthouse in five words."


# ---------------------------------------------------------------------------------------------
# aigrid: requests


@dataclass
class Answer:
    """One chat completion as the client saw it; times are perf_counter seconds."""

    status: int | None  # None: no HTTP answer (timeout or connection error)
    t_start: float
    t_end: float
    t_first: float | None = None  # first content token
    token_times: list[float] = field(default_factory=list)  # each content chunk (one token each)
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    done: bool = False  # a stream that ended with [DONE]
    problem: str | None = None  # an error event, a malformed body, a timeout ...
    retry_after: bool = False
    error_shape: bool = False  # a non-200 body in the OpenAI error shape

    @property
    def ttft_s(self) -> float:
        return (self.t_first if self.t_first is not None else self.t_end) - self.t_start

    @property
    def decode_tps(self) -> float:
        """Generated tokens/s from the first token to the last byte (the first comes before it)."""
        if self.t_first is None or not self.completion_tokens or self.t_end <= self.t_first:
            return float("nan")
        return (self.completion_tokens - 1) / (self.t_end - self.t_first)


def chat_body(content: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def prompt_text(tag: str, words: int, task: str) -> str:
    body = " ".join(FILLER[i % len(FILLER)] for i in range(words))
    return f"Record {tag}. {body}\n\n{task}"


def is_error_shape(raw: bytes) -> bool:
    with_error: Any
    try:
        with_error = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    error = with_error.get("error") if isinstance(with_error, dict) else None
    return isinstance(error, dict) and all(isinstance(error.get(k), str) for k in ("message", "type"))


def take_usage(answer: Answer, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    answer.completion_tokens = int(usage.get("completion_tokens") or 0)
    answer.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        answer.cached_tokens = int(details["cached_tokens"])


async def send(client: httpx.AsyncClient, body: dict[str, Any], timeout_s: float) -> Answer:
    """POST a chat completion, streamed or not; never raises for HTTP trouble, never outlasts timeout_s."""
    answer = Answer(None, time.perf_counter(), 0.0)
    try:
        async with asyncio.timeout(timeout_s):
            if body.get("stream"):
                await read_stream(client, body, answer)
            else:
                r = await client.post("/v1/chat/completions", json=body)
                answer.status = r.status_code
                answer.t_end = time.perf_counter()
                if r.status_code == 200:
                    data = r.json()
                    if not data.get("choices"):
                        answer.problem = "200 without choices"
                    answer.t_first = answer.t_end
                    take_usage(answer, data.get("usage"))
                else:
                    answer.error_shape = is_error_shape(r.content)
                    answer.retry_after = "retry-after" in r.headers
                    answer.problem = r.text[:300]
    except TimeoutError:
        answer.problem = f"no complete answer within {timeout_s:g} s"
    except (httpx.HTTPError, ValueError) as exc:
        answer.problem = f"{type(exc).__name__}: {exc}"
    if not answer.t_end:
        answer.t_end = time.perf_counter()
    return answer


class _StreamParser:
    """httptools callbacks for one streamed chat completion: SSE lines as the bytes arrive.

    The measuring client must cost the server's machine little: httpx's line iterator took about
    0.4 ms of CPU a token, taken from llama.cpp's two threads on a 2-core machine. This reads
    each frame with a bytes search and parses JSON only for usage and errors.
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.pending = b""
        self.body = b""
        self.headers: dict[bytes, bytes] = {}
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.answer.status = self.parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, data: bytes) -> None:
        answer = self.answer
        if answer.status != 200:
            self.body += data
            return
        now = time.perf_counter()
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                answer.done = True
            elif b'"content":"' in payload and b'"content":""' not in payload:
                answer.token_times.append(now)
                if answer.t_first is None:
                    answer.t_first = now
            elif b'"usage":{' in payload or b'"error"' in payload:
                event = orjson.loads(payload)
                if "error" in event:
                    answer.problem = f"error event in a 200 stream: {payload[:300]!r}"
                take_usage(answer, event.get("usage"))

    def on_message_complete(self) -> None:
        self.complete = True


async def read_stream(client: httpx.AsyncClient, body: dict[str, Any], answer: Answer) -> None:
    """POST a streamed chat completion on a connection of its own, read with `_StreamParser`."""
    url = client.base_url
    host, port = url.host, url.port or 80
    payload = orjson.dumps(body)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: {client.headers['authorization']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + payload)
        parser_state = _StreamParser(answer)
        while not parser_state.complete:
            data = await reader.read(65536)
            if not data:
                break
            parser_state.parser.feed_data(data)
    finally:
        writer.close()
    answer.t_end = time.perf_counter()
    if answer.status != 200:
        answer.error_shape = is_error_shape(parser_state.body)
        answer.retry_after = b"retry-after" in parser_state.headers
        answer.problem = parser_state.body[:300].decode(errors="replace")
    elif not answer.done and answer.problem is None:
        answer.problem = "stream ended without [DONE]"


def checked(answer: Answer, what: str) -> Answer:
    if answer.status != 200 or answer.problem is not None:
        raise RuntimeError(f"{what}: status {answer.status}, {answer.problem}")
    if answer.completion_tokens is None:
        raise RuntimeError(f"{what}: no usage in the answer (stream_options.include_usage)")
    return answer


async def words_for(client: httpx.AsyncClient, tokens: int, task: str, timeout_s: float) -> tuple[int, int]:
    """How many filler words make a prompt of about `tokens` tokens, as aigrid counts them
    (chat template included); and the count the chosen prompt actually has."""

    async def count(words: int) -> int:
        body = chat_body(prompt_text(secrets.token_hex(4), words, task), 1, stream=False)
        answer = checked(await send(client, body, timeout_s), "calibration request")
        return int(answer.prompt_tokens or 0)

    probe = 200
    base, more = await count(0), await count(probe)
    per_word = max((more - base) / probe, 0.1)
    words = max(0, round((tokens - base) / per_word))
    for _ in range(2):
        got = await count(words)
        if got == tokens:
            break
        words = max(0, words + round((tokens - got) / per_word))
    return words, await count(words)
