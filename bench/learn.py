"""The learning loop's figures: base model and experience memory side by side, on the fixed held-out splits.

    .venv/bin/python bench/learn.py                          # every suite, whole splits (about an hour)
    .venv/bin/python bench/learn.py --suites entry --limit 10   # a smoke run
    .venv/bin/python bench/learn.py --config my.toml         # another planner or compiler model

It starts the five example services and ``aigrid serve`` on free ports with fresh databases (the
rig of ``bench/entry.py``), then, through the server's own API and with its admin key:

1. teaches the experience memory each suite's TRAINING split (``POST /v1/learn/memory/teach``): the
   reference answers the verifier accepts (how the splits were made is printed from the server's
   ``GET /v1/learn/suites``, which reads the recorded ``splits.json``);
2. runs each suite's HELD-OUT split twice in the same server, one run right after the other, with
   the memory off (the base model as it plans today) and on (``POST /v1/learn/evals``);
3. prints every metric of both runs with 95% Wilson intervals, the difference, and whether the
   intervals are apart; the entry suite's seconds per task (mean and p95) for both; and the
   experience lookup's time per plan from ``/metrics`` (``aigrid_experience_lookup_seconds``).

Nothing that learns reads the held-out split: teaching reads ``train`` only, and the held-out runs
are judged without buying anything (the entry's verifier reads what the plan would buy).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from entry_world import BenchError, Rig, run_in_scratch

SUITES = ("entry", "compiler", "tools")
# The figures issue 17 asks for, per suite and metric: (with experience at least, base for context).
TARGETS = {
    ("entry", "buy_or_book"): 0.60,
    ("entry", "must_buy_nothing"): 1.00,
    ("compiler", "right_tools"): 0.70,
    ("compiler", "right_trigger"): 0.95,
    ("compiler", "valid"): 1.00,
}
RUN_TIMEOUT_S = 4 * 3600


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0


def teach(client: httpx.Client, suite: str) -> dict[str, Any]:
    answer = client.post("/v1/learn/memory/teach", json={"suite": suite}, timeout=3600)
    if answer.status_code != 200:
        raise BenchError(f"teaching {suite}: {answer.status_code} {answer.text[:300]}")
    return dict(answer.json())


def evaluate(client: httpx.Client, suite: str, experience: bool, limit: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"suite": suite, "split": "heldout", "experience": experience}
    if limit:
        body["limit"] = limit
    started = client.post("/v1/learn/evals", json=body)
    if started.status_code not in (200, 202):
        raise BenchError(f"eval {suite}: {started.status_code} {started.text[:300]}")
    run = started.json()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    shown = -1
    while run["state"] == "running" and time.monotonic() < deadline:
        time.sleep(2)
        run = client.get(f"/v1/learn/evals/{run['id']}").json()
        if run["done"] != shown:
            shown = run["done"]
            print(
                f"  {suite} {'with' if experience else 'without'} experience: {shown}/{run['total']}",
                flush=True,
            )
    if run["state"] != "done":
        raise BenchError(f"eval run {run['id']} ended {run['state']}: {run.get('error')}")
    return dict(client.get(f"/v1/learn/evals/{run['id']}").json())


def rate(metric: dict[str, Any] | None) -> str:
    if not metric or not metric["total"]:
        return "-"
    return (
        f"{metric['passed']:>3}/{metric['total']:<3} {100 * metric['rate']:5.1f}% "
        f"[{100 * metric['low']:4.1f}-{100 * metric['high']:5.1f}]"
    )


def verdict(ok: bool, what: str) -> str:
    return f"[{'PASS' if ok else 'FAIL'}] {what}"


def report(suite: str, base: dict[str, Any], learned: dict[str, Any], client: httpx.Client) -> list[str]:
    compared = client.get("/v1/learn/compare", params={"a": base["id"], "b": learned["id"]}).json()
    runs = f"runs {base['id']} and {learned['id']}"
    print(f"\n## {suite}: held-out, {base['total']} tasks; model {base['model']}; {runs}")
    print(f"{'metric':<18} {'base model':<30} {'with experience':<30} {'diff':>7}  apart")
    verdicts = []
    for row in compared["metrics"]:
        diff = "-" if row["difference"] is None else f"{100 * row['difference']:+.1f}"
        apart = "yes" if row["significant"] else "no"
        print(f"{row['name']:<18} {rate(row['a']):<30} {rate(row['b']):<30} {diff:>7}  {apart}")
        target = TARGETS.get((suite, row["name"]))
        if target is not None and row["b"]["total"]:
            got = row["b"]["rate"]
            what = f"{suite} {row['name']} with experience ≥ {100 * target:.0f}%: {100 * got:.1f}%"
            verdicts.append(verdict(got >= target, what))
    for label, run in (("base", base), ("experience", learned)):
        seconds = [r["seconds"] for r in run["results"]]
        mean = sum(seconds) / len(seconds)
        print(f"seconds per task, {label}: mean {mean:.1f}, p95 {p95(seconds):.1f}, max {max(seconds):.1f}")
    if suite == "entry":
        worst = p95([r["seconds"] for r in learned["results"]])
        what = f"entry answered within 15 s at p95 (with experience): {worst:.1f} s"
        verdicts.append(verdict(worst <= 15, what))
    changed = compared["tasks"]
    if changed:
        print("judged differently: " + ", ".join(f"{t['task']} ({'+' if t['b'] else '-'})" for t in changed))
    return verdicts


def lookup_seconds(client: httpx.Client) -> tuple[float, float] | None:
    text = client.get("/metrics").text
    total = count = None
    for line in text.splitlines():
        if line.startswith("aigrid_experience_lookup_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("aigrid_experience_lookup_seconds_count"):
            count = float(line.split()[-1])
    return None if not count or total is None else (total / count, count)


def run(args: argparse.Namespace, work: Path) -> int:
    rig = Rig(work, args.config)
    verdicts: list[str] = []
    try:
        began = time.monotonic()
        rig.start()
        print(f"# aigrid learning bench; services and server up in {time.monotonic() - began:.1f} s")
        with rig.client(timeout=120) as client:
            suites = {s["name"]: s for s in client.get("/v1/learn/suites").json()["data"]}
            for name in args.suites:
                splits = suites[name]["splits"]
                for split, label in (("train", "train"), ("heldout", "held-out")):
                    made = splits[split]
                    print(f"suite {name}: {label} {made['tasks']} task(s): {made['made']}")
                taught = teach(client, name)
                print(
                    f"taught {taught['taught']} verified example(s) in {taught['seconds']:.0f} s "
                    f"({taught['refused']} refused by the verifier or the teacher, "
                    f"{taught['already']} already kept)"
                )
                for refusal in taught["refusals"][:5]:
                    print(f"  refused: {refusal}")
            for name in args.suites:
                base = evaluate(client, name, False, args.limit)
                learned = evaluate(client, name, True, args.limit)
                verdicts += report(name, base, learned, client)
            looked = lookup_seconds(client)
            if looked is not None:
                mean, count = looked
                shown = f"mean {1000 * mean:.1f} ms over {count:.0f} lookups"
                print(f"\nexperience lookup (embedding and search): {shown}")
                verdicts.append(verdict(mean < 0.020, f"the memory's lookup adds under 20 ms: {shown}"))
    finally:
        rig.close()
    print("\ntargets (issue 17):")
    for line in verdicts:
        print("  " + line)
    return 0


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--limit", type=int, help="only the first N held-out tasks of each suite")
    parser.add_argument("--config", type=Path, help="a server config for aigrid serve --config")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    args = parser.parse_args()
    sys.exit(run_in_scratch("learn-", args.keep, lambda work: run(args, work)))


if __name__ == "__main__":
    cli()
