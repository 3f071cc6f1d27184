"""llama.cpp's own llama-batched-bench for the engine benchmarks: built from the installed
llama-cpp-python's source distribution on first use, run, and its table read.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from aigrid.grid.engine.cpu import host_choice
from processes import stop_process_group

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work"
LOGS = WORK / "logs"
SDIST_DIR = WORK / "sdist"
SOURCE_DIR = WORK / "llama-src"
BUFFERS = host_choice("auto")
BUILD_JOBS = 2
BENCH_CONTEXT = 4096
STREAMS = 8


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
