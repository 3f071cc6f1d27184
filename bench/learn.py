"""The learning loop's figures: base, best-of-N, experience memory and a trained student side by side.

    .venv/bin/python bench/learn.py                              # the whole run (hours on 2 cores)
    .venv/bin/python bench/learn.py --limit 10 --tasks 20 --k 1  # a smoke run
    .venv/bin/python bench/learn.py --no-train                   # issue 17's columns only

It starts the five example services and ``aigrid serve`` on free ports with fresh databases (the rig
of ``bench/entry.py``) and then, through the server's own API and with its admin key:

1. teaches the experience memory each suite's TRAINING split (``POST /v1/learn/memory/teach``);
2. runs ``--rounds`` self-training rounds of the planner (``POST /v1/learn/rounds``, each timed): the
   student (the base model, then the last round's version, which the next round trains on top of)
   answers ``--tasks`` training tasks (new ones each round) ``--k`` times at a temperature, the code teacher
   writes each task's reference plan, the verifier keeps what is right (the pass rates per source
   are printed), a dataset gathers them (held-out material left out by construction), and a LoRA
   adapter is trained on the CPU and served as the student, a model of its own;
3. runs the held-out splits, each column on the same tasks in the same server, one after the other:
   the base model; base + best-of-N with the plan checker (N plans drawn, the first that checks and
   whose read-only steps run is judged: no knowledge of the right answer); base + experience memory;
   the trained student; the student + experience memory. The entry suite runs on its in-distribution
   held-out split and on its entity-disjoint ``unseen`` split (products, routes and a restaurant no
   training task mentions); the compiler suite on its held-out split;
4. measures the student's generation speed against the base model's, side by side (same prompts,
   alternating, 4 at once);
5. prints every metric with 95% Wilson intervals and the issue's targets.

The base model's column is the planner as it runs, with its repairs in code (the grammar, the
checked plan sent back once with its refusal). Nothing that learns reads a held-out split: teaching
and sampling read ``train`` only, the dataset builder drops any held-out sentence or unseen entity,
and the held-out runs are judged without buying anything.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from entry_world import BenchError, Rig, run_in_scratch

RUN_TIMEOUT_S = 4 * 3600
ROUND_LIMIT_S = 30 * 60
# Columns: label, model ("base" or "student"), experience, best of.
COLUMNS = (
    ("base", "base", False, 1),
    ("best-of-N", "base", False, 0),
    ("base+memory", "base", True, 1),
    ("student", "student", False, 1),
    ("student+memory", "student", True, 1),
)
SPLITS = (("entry", "heldout"), ("entry", "unseen"), ("compiler", "heldout"))
ROWS = {
    "entry": ("buy_or_book", "must_buy_nothing", "all"),
    "compiler": ("right_tools", "right_trigger", "all"),
}
# Issue 18's figures for the student + memory column, in-distribution.
TARGETS = {
    ("entry", "buy_or_book"): 0.80,
    ("entry", "must_buy_nothing"): 1.00,
    ("compiler", "right_tools"): 0.85,
}
SPEED_PROMPT = "Write a long story about a lighthouse keeper and the sea, in many paragraphs."


def teach(client: httpx.Client, suite: str) -> None:
    answer = client.post("/v1/learn/memory/teach", json={"suite": suite}, timeout=3600)
    if answer.status_code != 200:
        raise BenchError(f"teaching {suite}: {answer.status_code} {answer.text[:300]}")
    taught = answer.json()
    print(f"memory taught {taught['taught']} verified {suite} example(s) in {taught['seconds']:.0f} s")


def evaluate(client: httpx.Client, body: dict[str, Any], label: str) -> dict[str, Any]:
    started = client.post("/v1/learn/evals", json=body)
    if started.status_code not in (200, 202):
        raise BenchError(f"eval {label}: {started.status_code} {started.text[:300]}")
    run = started.json()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while run["state"] == "running" and time.monotonic() < deadline:
        time.sleep(3)
        run = client.get(f"/v1/learn/evals/{run['id']}").json()
    print(f"  {label}: {run['done']}/{run['total']} judged ({run['id']})", flush=True)
    if run["state"] != "done":
        raise BenchError(f"eval run {run['id']} ended {run['state']}: {run.get('error')}")
    return dict(run)


def self_training_round(
    client: httpx.Client, args: argparse.Namespace, student: str | None
) -> dict[str, Any]:
    body = {
        "kind": "planner",
        "tasks": args.tasks,
        "k": args.k,
        "temperature": args.temperature,
        "teacher": "code",
        "experience": True,
        "promote": False,
        "train": {
            "epochs": args.epochs,
            "learning_rate": args.learning_rate,
            "batch_tokens": 2048,
            "layers": args.layers,
        },
    }
    if student is not None:
        body["student"] = student  # the last round's version samples, and the round trains on top of it
    began = time.monotonic()
    chosen = client.post("/v1/learn/rounds", json=body).json()
    if "id" not in chosen:
        raise BenchError(f"round refused: {chosen}")
    shown = ""
    while chosen["state"] not in ("done", "failed"):
        time.sleep(5)
        chosen = client.get(f"/v1/learn/rounds/{chosen['id']}").json()
        now = f"{chosen['state']} {chosen['sampled']}/{chosen['tasks']}"
        if chosen["state"] == "training" and chosen["model"]:
            training = client.get(f"/v1/learn/models/{chosen['model']}").json()["lineage"].get("training", {})
            now = f"training step {training.get('step')}/{training.get('steps')} loss {training.get('loss')}"
        if now != shown:
            shown = now
            print(f"  round {chosen['id']}: {now} ({time.monotonic() - began:.0f} s)", flush=True)
    seconds = time.monotonic() - began
    if chosen["state"] != "done":
        raise BenchError(f"the round failed: {chosen['error']}")
    model = client.get(f"/v1/learn/models/{chosen['model']}").json()
    dataset = client.get(f"/v1/learn/datasets/{chosen['dataset']}", params={"examples": 0}).json()
    lineage = model["lineage"]
    window = lineage.get("tasks") or {}
    print(
        f"\n## self-training round: {seconds / 60:.1f} min on this machine ({args.tasks} training tasks "
        f"from #{window.get('start')}; student {lineage.get('student')}, trained on top of "
        f"{lineage.get('parent') or 'the base'})"
    )
    for source, tally in (chosen["pass_rate"] or {}).items():
        share = f"{tally['passed']}/{tally['tried']} = {100 * (tally['rate'] or 0):.1f}%"
        print(f"verified-sample pass rate, {source}: {share}")
    print(
        f"dataset {dataset['id']}: {dataset['examples']} examples {dataset['sources']}, "
        f"left out {dataset['left_out'] or 'nothing'}"
    )
    training = lineage["training"]
    print(
        f"training: {training['steps']} steps, final loss {training['loss']}, {training['seconds']:.0f} s; "
        f"job {lineage['job']['rank']=} {lineage['job']['epochs']=} {lineage['job']['learning_rate']=} "
        f"{lineage['job'].get('layers')=}"
    )
    return {"model": model["id"], "seconds": seconds}


def rate(metric: dict[str, Any] | None) -> str:
    if not metric or not metric["total"]:
        return "-"
    interval = f"[{100 * metric['low']:.0f}-{100 * metric['high']:.0f}]"
    return f"{metric['passed']}/{metric['total']} {100 * metric['rate']:.0f}% {interval}"


def tokens_per_second(client: httpx.Client, model: str) -> float:
    body = {"model": model, "temperature": 0, "max_tokens": 160}
    body["messages"] = [{"role": "user", "content": SPEED_PROMPT}]

    def one(_: int) -> int:
        answer = client.post("/v1/chat/completions", json=body)
        answer.raise_for_status()
        return int(answer.json()["usage"]["completion_tokens"])

    began = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        tokens = sum(pool.map(one, range(4)))
    return tokens / (time.perf_counter() - began)


def speed(client: httpx.Client, base: str, student: str) -> float:
    totals = {base: 0.0, student: 0.0}
    tokens_per_second(client, student)  # warm both engines
    tokens_per_second(client, base)
    for _ in range(3):
        for model in (base, student):
            totals[model] += tokens_per_second(client, model)
    print(
        f"\n## generation speed, 4 at once, 3 alternating rounds (tokens/s): base {totals[base] / 3:.1f}, "
        f"student {totals[student] / 3:.1f}, student ÷ base {totals[student] / totals[base]:.3f}"
    )
    return totals[student] / totals[base]


def verdict(ok: bool, what: str) -> str:
    return f"[{'PASS' if ok else 'FAIL'}] {what}"


def run(args: argparse.Namespace, work: Path) -> int:
    rig = Rig(work, args.config)
    verdicts: list[str] = []
    try:
        began = time.monotonic()
        rig.start()
        print(f"# aigrid learning bench; services and server up in {time.monotonic() - began:.1f} s")
        with rig.client(timeout=600) as client:
            suites = {s["name"]: s for s in client.get("/v1/learn/suites").json()["data"]}
            for name in ("entry", "compiler"):
                for split, made in suites[name]["splits"].items():
                    print(f"suite {name} {split}: {made['tasks']} task(s): {made['made']}")
                teach(client, name)
            base = client.get("/v1/learn/models").json()["in_use"]["planner"]
            models = {"base": base}
            columns = [
                c for c in COLUMNS if (args.train or args.student or c[1] == "base") and c[0] in args.columns
            ]
            if args.student:
                models["student"] = args.student  # a student trained before, served by --config
            elif args.train:
                student = None
                for number in range(1, args.rounds + 1):
                    print(f"\n# round {number} of {args.rounds}")
                    trained = self_training_round(client, args, student)
                    student = models["student"] = trained["model"]
                    verdicts.append(
                        verdict(
                            trained["seconds"] <= ROUND_LIMIT_S,
                            f"round {number} in ≤ 30 min: {trained['seconds'] / 60:.1f} min",
                        )
                    )
                ratio = speed(client, base, models["student"])
                verdicts.append(
                    verdict(ratio >= 0.95, f"the student within 5% of the base's tokens/s: {ratio:.3f}")
                )
            results: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
            chosen = [
                (su, sp) for su, sp in SPLITS if su in args.suites and (su != "entry" or sp in args.splits)
            ]
            for suite, split in chosen:
                limit = {"unseen": args.unseen_limit, "compiler": args.compiler_limit}.get(
                    split if suite == "entry" else suite, args.limit
                )
                print(f"\n## {suite} {split} ({'first ' + str(limit) if limit else 'all'} tasks)")
                for label, which, experience, best_of in columns:
                    if best_of == 0 and suite != "entry":
                        continue
                    body: dict[str, Any] = {
                        "suite": suite,
                        "split": split,
                        "model": models[which],
                        "experience": experience,
                        "best_of": best_of or args.best_of,
                    }
                    if limit:
                        body["limit"] = limit
                    results.setdefault((suite, split), {})[label] = evaluate(client, body, label)
            print("\n# held-out figures (passed/total, rate, 95% interval)")
            labels = [c[0].replace("N", str(args.best_of)) for c in columns]
            for (suite, split), runs in results.items():
                print(f"\n{suite} {split}:")
                print(f"{'metric':<17}" + "".join(f"{label:<24}" for label in labels))
                for row in ROWS[suite]:
                    cells = [rate(runs[c[0]]["metrics"].get(row)) if c[0] in runs else "-" for c in columns]
                    print(f"{row:<17}" + "".join(f"{cell:<24}" for cell in cells))
            if (args.train or args.student) and "student+memory" in args.columns:
                for (suite, row), target in TARGETS.items():
                    if (suite, "heldout") not in results:
                        continue
                    metric = results[(suite, "heldout")]["student+memory"]["metrics"].get(row)
                    got = metric["rate"] if metric and metric["total"] else 0.0
                    verdicts.append(
                        verdict(
                            got >= target,
                            f"student+memory {suite} {row} ≥ {100 * target:.0f}%: {100 * got:.1f}%",
                        )
                    )
    finally:
        rig.close()
    print("\ntargets (issue 18):")
    for line in verdicts:
        print("  " + line)
    return 0


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks", type=int, default=120, help="training tasks the round samples (default 120)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds, each on the last one's version and new tasks (1)"
    )
    parser.add_argument("--k", type=int, default=2, help="student answers per training task (default 2)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--layers", type=int, help="LoRA on the top N decoder layers only (all)")
    parser.add_argument("--best-of", type=int, default=4, help="N of the best-of-N column (default 4)")
    parser.add_argument("--limit", type=int, help="only the first N tasks of each held-out split")
    parser.add_argument("--unseen-limit", type=int, help="only the first N tasks of the unseen split")
    parser.add_argument("--compiler-limit", type=int, help="only the first N tasks of the compiler's split")
    parser.add_argument("--no-train", dest="train", action="store_false", help="the base columns only")
    names = [c[0] for c in COLUMNS]
    parser.add_argument("--columns", nargs="+", choices=names, default=names, help="columns to run (all)")
    parser.add_argument("--suites", nargs="+", choices=("entry", "compiler"), default=["entry", "compiler"])
    parser.add_argument(
        "--splits", nargs="+", choices=("heldout", "unseen"), default=["heldout", "unseen"], help="entry's"
    )
    parser.add_argument("--student", help="judge this model (served by --config) as the student; no round")
    parser.add_argument("--config", type=Path, help="a server config for aigrid serve --config")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    args = parser.parse_args()
    sys.exit(run_in_scratch("learn-", args.keep, lambda work: run(args, work)))


if __name__ == "__main__":
    cli()
