#!/usr/bin/env python3
"""What turning llama.cpp's extra CPU buffers off costs on a CPU without AMX.

aigrid's engine turns ``use_extra_bufts`` off where the CPU has AMX (its AMX buffers crash
llama.cpp), and keeps it on elsewhere. To know what "off" would cost where it is not needed, this
builds llama-batched-bench from the llama.cpp of the installed llama-cpp-python *without* AMX
kernels (-DGGML_NATIVE=OFF with AVX2, FMA, F16C and AVX-512 on, every AMX option off): a build
whose only extra buffer type is CPU_REPACK, as on an AMD EPYC or an Intel CPU before Sapphire
Rapids. It then runs the same model with weight repacking on and off (-nr), alternating, and
prints generation and prompt tokens/s for 1 and 8 sequences side by side.

    .venv/bin/python bench/extra_buffers.py [--reps 3] [--threads N] [--npp 128] [--ntg 128]

The build (about 3 minutes on 2 cores the first time) goes to bench/.work/llama-build-<version>-noamx/.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from embedded import model_path
from llama_bench import LOGS, ensure_batched_bench, run_batched_bench
from processes import signals_raise

# x86-64 kernels as a CPU without AMX would get them; AMX off (GGML_NATIVE=OFF leaves it off).
NO_AMX = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_AVX512=ON",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
)
SEQUENCES = (1, 8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--npp", type=int, default=128)
    p.add_argument("--ntg", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--flash-attn", default="off")
    p.add_argument("--llama-timeout", type=float, default=900.0)
    p.add_argument("--skip-build", action="store_true")
    args = p.parse_args(argv)
    LOGS.mkdir(parents=True, exist_ok=True)
    with signals_raise():
        binary = ensure_batched_bench(args.skip_build, "noamx", NO_AMX)
        best: dict[tuple[bool, int, str], float] = {}
        buffers: dict[bool, set[str]] = {True: set(), False: set()}
        refused: dict[bool, set[tuple[str, str]]] = {True: set(), False: set()}
        for rep in range(args.reps):
            for repack in (True, False):
                name = f"extra-buffers-{'on' if repack else 'off'}"
                # -v: llama.cpp then logs where each tensor went (and which could not be repacked).
                _, _, rows = run_batched_bench(
                    binary, model_path(), args, SEQUENCES, False, repack=repack, log_name=name, extra=("-v",)
                )
                text = (LOGS / f"{name}.log").read_text(errors="replace")
                buffers[repack] |= {
                    f"{b} ({m} MiB)" for b, m in re.findall(r"(\S+) model buffer size = +([\d.]+)", text)
                }
                refused[repack] |= set(
                    re.findall(r"\(and (\d+) others\) cannot be used with preferred buffer type (\w+)", text)
                )
                for row in rows:
                    for attr in ("s_tg", "s_pp"):
                        key = (repack, row.pl, attr)
                        best[key] = max(best.get(key, 0.0), float(getattr(row, attr)))
                print(f"  run {rep + 1}, repacking {'on' if repack else 'off'}: done", file=sys.stderr)
    print(f"\nllama-batched-bench built without AMX kernels ({binary}), {model_path().name},")
    print(f"{args.threads} threads, npp {args.npp}, ntg {args.ntg}, best of {args.reps} runs each")
    for repack in (True, False):
        placed = ", ".join(sorted(buffers[repack])) or "?"
        print(f"  weights placed in, repacking {'on' if repack else 'off'}: {placed}")
        for others, kind in sorted(refused[repack]):
            print(f"    {int(others) + 1} tensors could not go to {kind} (no kernel for their type)")
    print(f"\n{'tokens/s':32}{'extra buffers on':>18}{'off':>10}{'off ÷ on':>10}")
    for pl in SEQUENCES:
        for attr, label in (("s_tg", "generation"), ("s_pp", "prompt")):
            on, off = best[(True, pl, attr)], best[(False, pl, attr)]
            print(f"{f'{label}, {pl} sequence(s)':32}{on:>18.1f}{off:>10.1f}{off / on:>10.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
