#!/usr/bin/env python3
"""What aigrid costs in front of an upstream, side by side with the upstream alone and with LiteLLM.

One run starts the shared mock upstream, aigrid (with a tenant key, so that auth, metering and
budgets are on the measured path) and the LiteLLM proxy in front of the same mock, then loads each
with wrk in three ways (32 connections, 1 connection, streaming at 32 connections). The runs are
interleaved per kind (mock, aigrid, litellm; then the next kind) so that every comparison is made
within the same minute on this shared, noisy machine.

    .venv/bin/python bench/gateway.py [--seconds 10] [--connections 32] [--skip-litellm]

Everything it starts is stopped again on exit, Ctrl-C or error. Scratch files and logs go under
bench/.work/ (git-ignored).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
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
import venv
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from processes import signals_raise, stop_process_group

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work"
HOST = "127.0.0.1"
MODEL = "mock"
LITELLM_VENV = WORK / "litellm-venv"
# 1.102.4 is the newest release whose pinned dependencies all resolve from the registry mirror
# reachable here (later ones pin a certifi and litellm-proxy-extras the mirror does not have yet).
LITELLM_REQUIREMENT = os.environ.get("AIGRID_BENCH_LITELLM", "litellm[proxy]==1.102.4")
TARGETS = ("mock", "aigrid", "litellm")
KINDS = ("c32", "c1", "stream")

# wrk's `done` callback from the shared chat.lua prints the RESULT line; this wrapper keeps the
# shared request and that line as they are and adds the exact number of completed requests.
COUNT_LUA = """\
dofile(os.getenv("AIGRID_BENCH_CHAT_LUA"))
local shared_done = done
done = function(summary, latency, requests)
  shared_done(summary, latency, requests)
  io.write(string.format("COUNT requests=%d duration_us=%d\\n", summary.requests, summary.duration))
end
"""
RESULT_RE = re.compile(
    r"RESULT rps=(?P<rps>[\d.]+) p50_ms=(?P<p50>[\d.]+) p90_ms=(?P<p90>[\d.]+) p99_ms=(?P<p99>[\d.]+)"
    r" errors=(?P<errors>\d+) non2xx=(?P<non2xx>\d+)"
)
COUNT_RE = re.compile(r"COUNT requests=(?P<requests>\d+) duration_us=(?P<duration>\d+)")


def shared_bench_dir() -> Path:
    """The shared bench folder: $AIGRID_SHARED/bench, else <repo>/../shared/bench."""
    root = os.environ.get("AIGRID_SHARED")
    return (Path(root) if root else REPO.parent / "shared") / "bench"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# processes


class Processes:
    """Servers started by this run, each in its own session, stopped by process-group id."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._running: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.log_dir,
            start_new_session=True,
        )
        self._running.append((name, proc, log))
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop_all(self) -> None:
        for name, proc, log in reversed(self._running):
            stop_process_group(proc)
            log.close()
            print(f"  stopped {name} (pid {proc.pid}, exit {proc.returncode})", file=sys.stderr)
        self._running.clear()


def wait_until(
    what: str,
    proc: subprocess.Popen[bytes],
    probe: Callable[[], bool],
    timeout_s: float,
    procs: Processes,
    name: str,
) -> float:
    """Poll `probe` until it holds; fail early when the process dies. Returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}:\n{procs.log_tail(name)}")
        with suppress(httpx.HTTPError):
            if probe():
                return time.monotonic() - start
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready in {timeout_s:.0f} s:\n{procs.log_tail(name)}")


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    return httpx.get(url, headers=headers, timeout=2.0).status_code == 200


def check_chat(base: str, key: str | None, stream: bool) -> None:
    """One request of the kind wrk sends, to be sure it answers 200 before loading it."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello there, how are you?"}],
        "max_tokens": 16,
    }
    if stream:
        body["stream"] = True
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=30.0)
    if r.status_code != 200:
        raise RuntimeError(
            f"{base}: chat completion (stream={stream}) answered {r.status_code}: {r.text[:500]}"
        )


# ---------------------------------------------------------------------------------------------
# servers


@dataclass
class Target:
    name: str
    base: str
    key: str | None = None
    checks: int = 0  # requests sent outside wrk (readiness checks), for the ledger comparison


def start_mock(procs: Processes, shared: Path, chunks: int, delay_ms: float) -> Target:
    port = free_port()
    argv = [sys.executable, str(shared / "mock_upstream.py"), "--host", HOST, "--port", str(port)]
    argv += ["--chunks", str(chunks), "--delay-ms", str(delay_ms)]
    proc = procs.start("mock", argv)
    base = f"http://{HOST}:{port}"
    wait_until("mock upstream", proc, lambda: http_ok(f"{base}/v1/models"), 30, procs, "mock")
    return Target("mock", base)


def aigrid_config(mock_base: str, database_url: str | None = None) -> str:
    # A database URL makes the server one node of a cluster: admission from quota leases.
    database = f'database_url = "{database_url}"\n' if database_url else ""
    return (
        database
        + f"""\
[[models]]
name = "{MODEL}"
policy = "failover"
[[models.deployments]]
backend = "openai"
base_url = "{mock_base}/v1"
upstream_model = "{MODEL}"
input_price_per_mtok = 0.8
output_price_per_mtok = 2.0
context_length = 131072
tier = "cloud"
"""
    )


@dataclass
class Aigrid:
    target: Target
    admin_key: str
    data_dir: Path


def start_aigrid(procs: Processes, mock_base: str, database_url: str | None = None) -> Aigrid:
    exe = REPO / ".venv" / "bin" / "aigrid"
    (WORK / "data").mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="aigrid-gateway-", dir=WORK / "data"))
    config = data_dir / "aigrid.toml"
    config.write_text(aigrid_config(mock_base, database_url), encoding="utf-8")
    admin_key = "sk-admin-" + secrets.token_hex(16)
    port = free_port()
    env = {**os.environ, "AIGRID_ADMIN_KEY": admin_key}
    argv = [str(exe), "serve", "--config", str(config), "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    proc = procs.start("aigrid", argv, env)
    base = f"http://{HOST}:{port}"
    waited = wait_until("aigrid", proc, lambda: http_ok(f"{base}/healthz"), 120, procs, "aigrid")
    print(f"  aigrid ready on {base} after {waited:.1f} s (data dir {data_dir})", file=sys.stderr)
    admin = {"Authorization": f"Bearer {admin_key}"}
    r = httpx.post(f"{base}/admin/tenants", json={"name": "bench"}, headers=admin, timeout=10.0)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"POST /admin/tenants answered {r.status_code}: {r.text[:500]}")
    r = httpx.post(f"{base}/admin/keys", json={"tenant": "bench"}, headers=admin, timeout=10.0)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"POST /admin/keys answered {r.status_code}: {r.text[:500]}")
    key = r.json().get("key")
    if not isinstance(key, str) or not key:
        raise RuntimeError(f"POST /admin/keys returned no 'key': {r.text[:500]}")
    if database_url:
        # Limits far above the load, so that every request is admitted from quota grants.
        for path, body in (
            ("/admin/budgets", {"tenant": "bench", "period": "day", "tokens": 10**12}),
            ("/admin/limits", {"tenant": "bench", "rpm": 10**8, "tpm": 2 * 10**9}),
        ):
            r = httpx.put(f"{base}{path}", json=body, headers=admin, timeout=10.0)
            if r.status_code != 200:
                raise RuntimeError(f"PUT {path} answered {r.status_code}: {r.text[:500]}")
    target = Target("aigrid", base, key)
    check_chat(base, key, stream=False)
    check_chat(base, key, stream=True)
    target.checks = 2
    return Aigrid(target, admin_key, data_dir)


def ensure_litellm() -> Path:
    """The litellm executable of the throwaway venv, installing it there on first use."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"  installing {LITELLM_REQUIREMENT} into {LITELLM_VENV} (several minutes) ...", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=True).create(LITELLM_VENV)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, LITELLM_REQUIREMENT], check=True, timeout=1800)
    if not exe.exists():
        raise RuntimeError(f"{exe} missing after installing {LITELLM_REQUIREMENT}")
    return exe


def litellm_env() -> dict[str, str]:
    """LiteLLM's environment: no database, no master key, quiet logs, no outbound requests."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LITELLM_", "OPENAI_", "DATABASE_", "REDIS_", "LANGFUSE_", "AIGRID_"))
    }
    env.update(
        LITELLM_LOG="ERROR",  # the litellm/proxy/router loggers
        LITELLM_TELEMETRY="False",
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # read the bundled price map instead of fetching it
        LITELLM_MODE="PRODUCTION",  # do not read a .env file
        DISABLE_ADMIN_UI="True",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


# uvicorn logs every request at INFO by default; keep warnings and errors only.
UVICORN_QUIET_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    },
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "uvicorn.error": {"level": "WARNING"},
        "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}


def start_litellm(procs: Processes, mock_base: str) -> Target:
    exe = ensure_litellm()
    cfg_dir = WORK / "litellm"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": f"{mock_base}/v1", "api_key": "x"},
            }
        ],
        "litellm_settings": {"telemetry": False, "set_verbose": False, "json_logs": False},
        "general_settings": {"disable_spend_logs": True},
    }
    path = cfg_dir / "config.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
    log_config = cfg_dir / "uvicorn-log.json"
    log_config.write_text(json.dumps(UVICORN_QUIET_LOGGING, indent=2), encoding="utf-8")
    port = free_port()
    argv = [str(exe), "--config", str(path), "--host", HOST, "--port", str(port), "--num_workers", "1"]
    argv += ["--telemetry", "False", "--log_config", str(log_config)]
    proc = procs.start("litellm", argv, litellm_env())
    base = f"http://{HOST}:{port}"
    waited = wait_until("litellm", proc, lambda: http_ok(f"{base}/health/liveliness"), 300, procs, "litellm")
    print(f"  litellm ready on {base} after {waited:.1f} s", file=sys.stderr)
    check_chat(base, None, stream=False)
    check_chat(base, None, stream=True)
    return Target("litellm", base)


# ---------------------------------------------------------------------------------------------
# load


@dataclass
class Load:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    non2xx: int
    requests: int
    duration_s: float


def wrk(target: Target, connections: int, seconds: float, stream: bool, shared: Path, threads: int) -> Load:
    """The shared gateway_load.sh measurement (wrk -t1 --latency with chat.lua), plus the request count."""
    lua = WORK / "wrk_count.lua"
    lua.write_text(COUNT_LUA, encoding="utf-8")
    env = {
        **os.environ,
        "AIGRID_BENCH_CHAT_LUA": str(shared / "chat.lua"),
        "MODEL": MODEL,
        "STREAM": "1" if stream else "0",
    }
    env.pop("KEY", None)
    if target.key:
        env["KEY"] = target.key
    secs = max(1, round(seconds))
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{secs}s", "--latency", "-s", str(lua)]
    argv.append(f"{target.base}/v1/chat/completions")
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=secs + 60, check=False)
    result, count = RESULT_RE.search(out.stdout), COUNT_RE.search(out.stdout)
    if out.returncode != 0 or result is None or count is None:
        raise RuntimeError(
            f"wrk against {target.name} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
        )
    return Load(
        rps=float(result["rps"]),
        p50_ms=float(result["p50"]),
        p90_ms=float(result["p90"]),
        p99_ms=float(result["p99"]),
        errors=int(result["errors"]),
        non2xx=int(result["non2xx"]),
        requests=int(count["requests"]),
        duration_s=int(count["duration"]) / 1e6,
    )


def ledger_requests(aigrid: Aigrid, settle_s: float = 10.0) -> int | None:
    """Requests the ledger holds for tenant 'bench', once two reads half a second apart agree."""
    headers = {"Authorization": f"Bearer {aigrid.admin_key}"}
    url = f"{aigrid.target.base}/v1/usage"
    last: int | None = None
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        r = httpx.get(url, params={"group_by": "tenant"}, headers=headers, timeout=10.0)
        if r.status_code != 200:
            print(
                f"  GET /v1/usage?group_by=tenant answered {r.status_code}: {r.text[:300]}", file=sys.stderr
            )
            return None
        rows = r.json().get("data", [])
        now = sum(int(row.get("requests", 0)) for row in rows if row.get("tenant") == "bench")
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    return last


# ---------------------------------------------------------------------------------------------
# report


@dataclass
class Runs:
    by: dict[tuple[str, str], list[Load]] = field(default_factory=dict)
    wrk_requests: dict[str, int] = field(default_factory=dict)  # completed per target, warm-ups included
    checks: int = 0  # aigrid requests sent outside wrk
    ledger: int | None = None  # aigrid requests the ledger recorded for tenant 'bench'

    def add(self, target: str, kind: str, load: Load) -> None:
        self.by.setdefault((target, kind), []).append(load)

    def get(self, target: str, kind: str, attr: str) -> float | None:
        loads = self.by.get((target, kind))
        if not loads:
            return None
        return float(statistics.median(getattr(x, attr) for x in loads))

    def bad(self, target: str, kind: str) -> int:
        return sum(x.errors + x.non2xx for x in self.by.get((target, kind), []))


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else ("PASS" if ok else "FAIL")


def versions(targets: list[str]) -> str:
    out = []
    if "aigrid" in targets:
        with suppress(importlib.metadata.PackageNotFoundError):
            out.append(f"aigrid {importlib.metadata.version('aigrid')}")
    if "litellm" in targets:
        found = sorted(LITELLM_VENV.glob("lib/python*/site-packages/litellm-*.dist-info"))
        out += [f"litellm {d.name.removeprefix('litellm-').removesuffix('.dist-info')}" for d in found]
    return ", ".join(out) or "-"


def report(runs: Runs, targets: list[str], args: argparse.Namespace) -> list[str]:
    c = args.connections
    lines = [
        "",
        f"aigrid gateway benchmark: {args.seconds:g} s per run (+{args.warmup:g} s warm-up),"
        f" {args.rounds} round(s), medians; wrk -t{args.wrk_threads};"
        f" mock --chunks {args.chunks} --delay-ms {args.delay_ms:g}",
        f"versions: {versions(targets)}; {os.cpu_count()} cpus, load average at start {args.load_at_start}",
        "",
        f"{'':10}{f'rps@{c}':>12}{f'p50@{c} ms':>12}{f'p99@{c} ms':>12}{'p50@1 ms':>11}"
        f"{f'stream rps@{c}':>16}{'stream p50 ms':>15}",
    ]
    for t in targets:
        row = f"{t:10}{fmt(runs.get(t, 'c32', 'rps')):>12}{fmt(runs.get(t, 'c32', 'p50_ms'), 3):>12}"
        row += f"{fmt(runs.get(t, 'c32', 'p99_ms'), 3):>12}{fmt(runs.get(t, 'c1', 'p50_ms'), 3):>11}"
        row += f"{fmt(runs.get(t, 'stream', 'rps')):>16}{fmt(runs.get(t, 'stream', 'p50_ms'), 3):>15}"
        bad = {k: runs.bad(t, k) for k in KINDS if runs.bad(t, k)}
        if bad:
            row += "   ! errors/non-2xx: " + ", ".join(f"{k}={n}" for k, n in bad.items())
        lines.append(row)

    a_rps, l_rps = runs.get("aigrid", "c32", "rps"), runs.get("litellm", "c32", "rps")
    a_srps, l_srps = runs.get("aigrid", "stream", "rps"), runs.get("litellm", "stream", "rps")
    m_rps, m_srps = runs.get("mock", "c32", "rps"), runs.get("mock", "stream", "rps")
    a_p1, m_p1 = runs.get("aigrid", "c1", "p50_ms"), runs.get("mock", "c1", "p50_ms")
    added = None if a_p1 is None or m_p1 is None else a_p1 - m_p1
    r_rps, r_srps = ratio(a_rps, l_rps), ratio(a_srps, l_srps)
    lines += [
        "",
        f"aigrid ÷ litellm   rps {fmt(r_rps, 2)}×   streaming rps {fmt(r_srps, 2)}×",
        f"aigrid ÷ mock      rps {fmt(ratio(a_rps, m_rps), 3)}"
        f"   streaming rps {fmt(ratio(a_srps, m_srps), 3)}   p50@1 {fmt(ratio(a_p1, m_p1), 2)}×",
        f"aigrid added p50 at 1 connection: {fmt(added, 3)} ms ({fmt(a_p1, 3)} − {fmt(m_p1, 3)} ms)",
    ]
    if "aigrid" in runs.wrk_requests:
        sent = runs.wrk_requests["aigrid"] + runs.checks
        recorded = "n/a" if runs.ledger is None else f"{runs.ledger:,}"
        extra = "" if runs.ledger is None else f", ledger − sent = {runs.ledger - sent:+,}"
        lines.append(
            f"aigrid metering: ledger recorded {recorded} requests for tenant 'bench'; wrk completed"
            f" {runs.wrk_requests['aigrid']:,} (warm-ups included) + {runs.checks} readiness checks"
            f" = {sent:,}{extra}"
        )
    lines += [
        "",
        "targets:",
        f"  [{verdict(None if r_rps is None else r_rps >= 20)}] aigrid rps ≥ 20× litellm: {fmt(r_rps, 2)}×",
        f"  [{verdict(None if added is None else added < 0.5)}] aigrid added p50 at 1 connection < 0.5 ms:"
        f" {fmt(added, 3)} ms",
        f"  [{verdict(None if r_srps is None else r_srps >= 10)}] aigrid streaming rps ≥ 10× litellm:"
        f" {fmt(r_srps, 2)}×",
    ]
    return lines


def measure(args: argparse.Namespace, targets: dict[str, Target], shared: Path, runs: Runs) -> None:
    """Every kind of run against every target, interleaved so that each comparison shares a minute."""
    spec = {"c32": (args.connections, False), "c1": (1, False), "stream": (args.connections, True)}
    for rnd in range(args.rounds):
        for kind in args.kind_list:
            conns, stream = spec[kind]
            for name in args.targets:
                t = targets[name]
                if args.warmup > 0:
                    w = wrk(t, conns, args.warmup, stream, shared, args.wrk_threads)
                    runs.wrk_requests[name] = runs.wrk_requests.get(name, 0) + w.requests
                x = wrk(t, conns, args.seconds, stream, shared, args.wrk_threads)
                runs.wrk_requests[name] = runs.wrk_requests.get(name, 0) + x.requests
                runs.add(name, kind, x)
                print(
                    f"  round {rnd + 1} {kind:6} {name:8} rps={x.rps:,.1f} p50={x.p50_ms:.3f} ms"
                    f" p99={x.p99_ms:.3f} ms requests={x.requests:,} errors={x.errors} non2xx={x.non2xx}",
                    file=sys.stderr,
                )


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each measured wrk run (10)")
    p.add_argument(
        "--database-url",
        help="aigrid on this database (e.g. a PostgreSQL: a cluster node, admitting from quota leases)",
    )
    p.add_argument("--connections", type=int, default=32, help="connections for the loaded runs (32)")
    p.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of unmeasured load before each run (2; 0=off)"
    )
    p.add_argument("--rounds", type=int, default=1, help="repeat the interleaved runs, report medians (1)")
    p.add_argument(
        "--only",
        default=",".join(TARGETS),
        help="comma list of mock,aigrid,litellm to measure (all); the mock upstream is always started",
    )
    p.add_argument("--skip-litellm", action="store_true", help="same as leaving litellm out of --only")
    p.add_argument(
        "--kinds", default=",".join(KINDS), help="comma list of c32 (the --connections run), c1, stream (all)"
    )
    p.add_argument("--chunks", type=int, default=16, help="mock: SSE chunks per streamed answer (16)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="mock: delay before each answer (0)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads, as in gateway_load.sh (1)")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    p.add_argument("--keep", action="store_true", help="keep aigrid's data dir under bench/.work/data")
    args = p.parse_args(argv)
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    if args.skip_litellm:
        only = [t for t in only if t != "litellm"]
    unknown = set(only) - set(TARGETS)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if unknown or not only or set(kinds) - set(KINDS) or not kinds:
        p.error(f"--only takes {','.join(TARGETS)}; --kinds takes {','.join(KINDS)}")
    if args.seconds < 1 or args.connections < 1 or args.rounds < 1:
        p.error("--seconds, --connections and --rounds must be at least 1")
    args.targets = [t for t in TARGETS if t in only]
    args.kind_list = [k for k in KINDS if k in kinds]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shared = shared_bench_dir()
    for f in ("mock_upstream.py", "chat.lua"):
        if not (shared / f).exists():
            print(f"missing {shared / f}; set AIGRID_SHARED to the shared folder", file=sys.stderr)
            return 2
    if shutil.which("wrk") is None:
        print("wrk not found on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    log_dir = WORK / "logs"
    log_dir.mkdir(exist_ok=True)
    procs = Processes(log_dir)
    aigrid: Aigrid | None = None
    runs = Runs()
    args.load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before: {args.load_at_start}; logs in {log_dir}", file=sys.stderr)
    try:
        with signals_raise():
            mock = start_mock(procs, shared, args.chunks, args.delay_ms)
            targets: dict[str, Target] = {"mock": mock}
            if "aigrid" in args.targets:
                aigrid = start_aigrid(procs, mock.base, args.database_url)
                targets["aigrid"] = aigrid.target
            if "litellm" in args.targets:
                targets["litellm"] = start_litellm(procs, mock.base)
            measure(args, targets, shared, runs)
            if aigrid is not None:
                runs.checks = aigrid.target.checks
                runs.ledger = ledger_requests(aigrid)
            lines = report(runs, args.targets, args)
            print("\n".join(lines))
            if args.json:
                raw = {f"{t}/{k}": [asdict(x) for x in v] for (t, k), v in runs.by.items()}
                args.json.write_text(
                    json.dumps({"runs": raw, "completed": runs.wrk_requests, "ledger": runs.ledger}, indent=2)
                )
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (RuntimeError, httpx.HTTPError, subprocess.SubprocessError, OSError) as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if aigrid is not None and not args.keep:
            shutil.rmtree(aigrid.data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
