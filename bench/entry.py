"""The super entry end to end: the task suite against the example services, and sagas under SIGKILL.

    .venv/bin/python bench/entry.py                       # 43 tasks, then 50 killed sagas (30+ min)
    .venv/bin/python bench/entry.py --tasks 5 --faults 5  # a smoke run
    .venv/bin/python bench/entry.py --tasks 0             # the fault part alone
    .venv/bin/python bench/entry.py --only purchase --faults 0 --config my.toml

It starts the five example services (``examples/services``) on free ports with fresh databases, and
``aigrid serve`` on a free port with a fresh data dir (the embedded SmolLM2 unless ``--config`` names
another model), registers the services through ``POST /admin/services`` with the admin key the server
wrote, and stops everything at the end, on Ctrl-C and SIGTERM too. Scratch files go under
``bench/.work/`` (``--keep`` keeps them, with the server's and the services' logs).

Suite: each task of ``src/aigrid/learn/suites/entry_heldout.jsonl`` is asked with ``confirm: true``
(its user, wait 300 s); the services' state before and after is scored (``entry_state.score``) and
the money checked (``entry_state.invariant``).

Faults: purchase plans built here (no model; shop orders, flights, hotels, food, two purchases in one
plan, and purchases the seller refuses once the money is held) are sent with ``confirm: true``, and the
server is killed (SIGKILL, its whole process group) after a random delay: most kills uniformly over 0
to 1.5 times the median saga after the entry leaves planning (the bench polls the server's database,
read-only), a share (``--from-send``) over 0 to 1.5 times the median answer after sending the POST;
both medians come from a few entries first sent without a kill. The server is started again on the
same data dir and port; it must carry every open saga to its end within 60 s of answering, and the
money must add up. Where each kill landed is read from the server's database right after the kill.
It exits 1 if the money does not add up or an entry is left open.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aigrid.config import load_config
from entry_faults import report_faults, run_faults
from entry_state import State, default_seed_dir, invariant, new_since, score, seed_balances
from entry_world import ROOT, TASK_WAIT_S, BenchError, Rig, ask, open_entries, run_in_scratch, settle, short

TASKS = ROOT / "src" / "aigrid" / "learn" / "suites" / "entry_heldout.jsonl"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0


def model_in_use(config: Path | None) -> str:
    """The model the planner uses, as the server's config resolves it."""
    loaded = load_config(config)
    wanted = loaded.kernel.planner_model
    for model in loaded.models:
        if wanted == model.name or wanted in model.aliases:
            deployments = ", ".join(
                f"{d.backend} {d.upstream_model or d.name or ''}" for d in model.deployments
            )
            return f"{model.name} ({deployments})"
    named = [m.name for m in loaded.models if any(d.tier == wanted for d in m.deployments)]
    return f"tier {wanted}: {', '.join(named) or 'no model'}"


# -- the suite ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskResult:
    id: str
    kind: str
    passed: bool
    state: str
    seconds: float
    reason: str
    must_buy_nothing: bool
    bought_nothing: bool
    violations: list[str]


def load_tasks(limit: int | None, only: str | None) -> list[dict[str, Any]]:
    tasks = [json.loads(line) for line in TASKS.read_text(encoding="utf-8").splitlines() if line.strip()]
    tasks = tasks if limit is None else tasks[:limit]
    return [t for t in tasks if only is None or t["kind"] == only]


def run_task(rig: Rig, task: dict[str, Any], before: State, seed: dict[str, int]) -> tuple[TaskResult, State]:
    body = {"input": task["input"], "user": task["user"], "confirm": True, "wait": TASK_WAIT_S}
    began = time.monotonic()
    state, error, answer = "error", "", ""
    with rig.client(timeout=TASK_WAIT_S + 60) as client:
        try:
            entry = settle(client, ask(client, body))
            state, answer = entry["state"], str(entry.get("answer") or entry.get("summary") or "")
        except (httpx.HTTPError, BenchError) as exc:
            error = f"request failed: {exc}"
    seconds = time.monotonic() - began
    after = rig.snapshot(previous=before)
    scored = score(task, before, after)
    nothing = not new_since(before, after).created and before.wallets == after.wallets
    result = TaskResult(
        id=task["id"],
        kind=task["kind"],
        passed=scored.passed and not error,
        state=state,
        seconds=seconds,
        reason=error or (scored.reason if scored.passed else f"{scored.reason} | answer: {answer}"),
        must_buy_nothing=not task.get("expect"),
        bought_nothing=nothing,
        violations=invariant(after, seed),
    )
    return result, after


def print_task(r: TaskResult) -> None:
    verdict = "passed" if r.passed else "failed"
    flag = f"  INVARIANT: {short('; '.join(r.violations), 200)}" if r.violations else ""
    print(
        f"{r.id:<40} {r.kind:<12} {verdict:<6} {r.state:<13} {r.seconds:6.1f} s  {short(r.reason, 160)}{flag}"
    )


def run_suite(rig: Rig, tasks: list[dict[str, Any]], seed: dict[str, int]) -> list[TaskResult]:
    print(f"\n## suite: {len(tasks)} task(s)")
    results: list[TaskResult] = []
    state = rig.snapshot()
    for task in tasks:
        result, state = run_task(rig, task, state, seed)
        print_task(result)
        sys.stdout.flush()
        results.append(result)
    return results


def report_suite(results: list[TaskResult], model: str) -> None:
    if not results:
        return
    passed = sum(r.passed for r in results)
    print(f"\nsuite: {passed}/{len(results)} passed ({100 * passed / len(results):.0f}%), model {model}")
    kinds = Counter(r.kind for r in results)
    for kind in sorted(kinds):
        ok = sum(r.passed for r in results if r.kind == kind)
        print(f"  {kind:<12} {ok}/{kinds[kind]} ({100 * ok / kinds[kind]:.0f}%)")
    nothing = [r for r in results if r.must_buy_nothing]
    print(f"must buy nothing: {sum(r.bought_nothing for r in nothing)}/{len(nothing)} bought nothing")
    broken = [r for r in results if r.violations]
    print(
        f"invariant violations: {sum(len(r.violations) for r in results)} "
        f"(checked after each of {len(results)} task(s); {len(broken)} with a violation)"
    )
    seconds = [r.seconds for r in results]
    print(f"seconds per task: mean {statistics.mean(seconds):.1f}, p95 {p95(seconds):.1f}")


# -- main -------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> int:
    model = model_in_use(args.config)
    seed = seed_balances(default_seed_dir())
    rig = Rig(work, args.config)
    try:
        began = time.monotonic()
        rig.start()
        print(
            f"# aigrid entry bench: model {model}; services and server up in {time.monotonic() - began:.1f} s"
        )
        suite = run_suite(rig, load_tasks(args.tasks, args.only), seed) if args.tasks != 0 else []
        faults = (
            run_faults(rig, args.faults, random.Random(args.seed), seed, args.from_send)
            if args.faults
            else []
        )
        with rig.client() as client:
            still_open = len(open_entries(client))
    finally:
        rig.close()
    report_suite(suite, model)
    report_faults(faults)
    broken = any(r.violations for r in suite) or any(r.violations for r in faults)
    left = still_open + sum(r.left_open for r in faults)
    print(f"\nverdict: invariant {'VIOLATED' if broken else 'held'}; entries left open: {left}")
    return 1 if broken or left else 0


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=None, help="only the first N tasks (0: no suite)")
    parser.add_argument("--only", help="only tasks of this kind (purchase, booking, food, info, ...)")
    parser.add_argument("--faults", type=int, default=50, help="killed sagas (0: none)")
    parser.add_argument("--config", type=Path, help="a server config for aigrid serve --config")
    parser.add_argument(
        "--from-send", type=float, default=0.2, help="share of kills timed from sending, not from the saga"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the fault plans and kill times")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    args = parser.parse_args()
    sys.exit(run_in_scratch("entry-", args.keep, lambda work: run(args, work)))


if __name__ == "__main__":
    cli()
