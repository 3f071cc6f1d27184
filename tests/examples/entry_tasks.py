"""What each task of ``src/aigrid/learn/suites/entry_heldout.jsonl`` must buy, worked out from the seed data.

The rules and the solver are ``aigrid.learn.world``'s. ``check_tasks`` is what
``tests/examples/test_entry_state.py`` runs; after editing a task's rule,
``.venv/bin/python -m tests.examples.entry_tasks`` rewrites every ``expect`` from the rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aigrid.learn.world import KINDS, STEP_KINDS, TaskError, World, apply, solve

TASKS = Path(__file__).resolve().parents[2] / "src" / "aigrid" / "learn" / "suites" / "entry_heldout.jsonl"
__all__ = ["KINDS", "TASKS", "World", "check_tasks", "load_tasks"]


def load_tasks(path: Path = TASKS) -> list[dict[str, Any]]:
    """The task file, one JSON object a line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_tasks(tasks: list[dict[str, Any]], seed: Path) -> list[str]:
    """Every way the tasks disagree with the seed, one line each (empty: they all hold).

    Each task's rule is solved twice: against the seed as it is, and against the seed after every
    earlier task bought what it expects (the tasks run in file order on the same services). Both
    must give the task's ``expect``. Purchases only ever lower stock and balances and each rule
    picks by a fixed order, so agreeing at both ends means the expectation holds whichever earlier
    tasks succeeded.
    """
    problems: list[str] = []
    pristine, running = World.from_seed(seed), World.from_seed(seed)
    for task in tasks:
        tid, kind, user = task["id"], task["kind"], task["user"]
        try:
            fresh = solve(pristine, task["rule"], user)
            later = solve(running, task["rule"], user)
        except TaskError as exc:
            problems.append(f"{tid}: {exc}")
            continue
        if (fresh.status, fresh.purchases) != (later.status, later.purchases):
            problems.append(
                f"{tid}: earlier tasks change it: {fresh.status} {fresh.purchases} at the seed,"
                f" {later.status} {later.purchases} after them"
            )
        want_status = {"impossible": "impossible", "insufficient": "insufficient"}.get(kind, "ok")
        if later.status != want_status:
            problems.append(f"{tid}: kind {kind} but the rule comes to {later.status} ({later.why})")
        want = later.purchases if kind in STEP_KINDS else []
        if task["expect"] != want:
            problems.append(f"{tid}: expect {task['expect']} but the seed implies {want}")
        if kind in STEP_KINDS:
            steps = {next(k for k in ("buy", "flight", "hotel", "food") if k in s) for s in task["rule"]}
            if not steps <= STEP_KINDS[kind]:
                problems.append(f"{tid}: kind {kind} with steps {sorted(steps)}")
            apply(running, later, user)
        if kind == "info" and task.get("answer") != later.purchases:
            problems.append(f"{tid}: answer {task.get('answer')} but the seed implies {later.purchases}")
    return problems


def fill_expectations(tasks: list[dict[str, Any]], seed: Path) -> list[dict[str, Any]]:
    """The tasks with ``expect`` (and ``answer`` for info ones) worked out from their rules, in order."""
    running = World.from_seed(seed)
    filled: list[dict[str, Any]] = []
    for task in tasks:
        outcome = solve(running, task["rule"], task["user"])
        done = {**task, "expect": outcome.purchases if task["kind"] in STEP_KINDS else []}
        if task["kind"] == "info":
            done["answer"] = outcome.purchases
        if task["kind"] in STEP_KINDS:
            apply(running, outcome, task["user"])
        filled.append(done)
    return filled


def main() -> None:
    """Rewrite the task file's expectations from its rules and the seed, then check it.

    ``.venv/bin/python -m tests.examples.entry_tasks [SEED_DIR]``, from the repository root, after
    adding or editing a task's ``id``, ``input``, ``user``, ``kind`` and ``rule``.
    """
    import os
    import sys

    root = Path(__file__).resolve().parents[2]
    default = Path(os.environ.get("AIGRID_SHARED", root.parent / "shared")) / "fixtures" / "services"
    seed = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    tasks = fill_expectations(load_tasks(), seed)
    TASKS.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks), encoding="utf-8")
    problems = check_tasks(tasks, seed)
    print("\n".join(problems) or f"{len(tasks)} tasks agree with the seed in {seed}")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
