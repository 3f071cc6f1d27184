#!/usr/bin/env python3
"""/healthz while a huge prompt is refused: does a 30 MB body hold up the rest of the server?

A running aigrid on the embedded model is sent a chat request whose prompt is --mb megabytes
(refused: it cannot fit the model's context), while this process asks GET /healthz every 10 ms on
another connection. Reported per round: how long the refusal took, and the /healthz latencies
(median, p99, max) while it was under way. Target (issue 19): /healthz within 50 ms throughout.

    .venv/bin/python bench/big_bodies.py [--rounds 5] [--mb 30]

It starts `aigrid serve` (the default embedded model) on a free loopback port with a scratch data
dir under bench/.work/, as bench/embedded.py does, and stops it at the end.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import httpx
import orjson

from embedded import WORK, started_aigrid

TARGET_MS = 50.0


def huge_chat(mb: float) -> bytes:
    """A chat request whose one user message makes the body ``mb`` megabytes."""
    words = "lorem ipsum " * int(mb * 2**20 / 12)
    return orjson.dumps(
        {"model": "smollm2-135m", "messages": [{"role": "user", "content": words}], "max_tokens": 2}
    )


def one_round(base: str, key: str, body: bytes) -> tuple[int, float, list[float]]:
    """The refusal's status and seconds, and the /healthz latencies (ms) seen meanwhile."""
    outcome: dict[str, float] = {}

    def post() -> None:
        started = time.perf_counter()
        answer = httpx.post(
            f"{base}/v1/chat/completions",
            content=body,
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
            timeout=300,
        )
        outcome["seconds"] = time.perf_counter() - started
        outcome["status"] = answer.status_code

    latencies: list[float] = []
    with httpx.Client(base_url=base, timeout=30) as health:
        health.get("/healthz")
        poster = threading.Thread(target=post)
        poster.start()
        while poster.is_alive():
            started = time.perf_counter()
            health.get("/healthz")
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
        poster.join()
    return int(outcome["status"]), outcome["seconds"], latencies


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=float, default=30.0)
    args = parser.parse_args()
    body = huge_chat(args.mb)
    WORK.mkdir(parents=True, exist_ok=True)
    worst: list[float] = []
    with started_aigrid(Path(WORK / "big_bodies.log"), None) as (base, key, _proc):
        print(f"a {len(body) / 2**20:.1f} MB chat request to the embedded model, {args.rounds} round(s)")
        print(" round  status  refused in   /healthz n   median    p99      max")
        for n in range(1, args.rounds + 1):
            status, seconds, lat = one_round(base, key, body)
            lat.sort()
            p99 = lat[max(0, int(len(lat) * 0.99) - 1)]
            worst.append(lat[-1])
            print(
                f" {n:>5}  {status:>6}  {seconds:>8.2f} s  {len(lat):>10}  {statistics.median(lat):>5.1f} ms"
                f"  {p99:>5.1f} ms  {lat[-1]:>5.1f} ms"
            )
    verdict = "met" if max(worst) <= TARGET_MS else "NOT met"
    print(
        f"/healthz max over all rounds {max(worst):.1f} ms, median of round maxima "
        f"{statistics.median(worst):.1f} ms; target {TARGET_MS:.0f} ms: {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
