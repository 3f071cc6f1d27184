"""The training job's parts that need no model: settings, batches, precision, errors, the gate, roles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from aigrid.entry.planner import UNKEPT_PREFIX
from aigrid.kernel.model import ModelRoles
from aigrid.learn.datasets import _first_prompt, asks_held_out
from aigrid.learn.loop import _after, _window
from aigrid.learn.models import SuiteModels, gate
from aigrid.learn.suites import suite
from aigrid.learn.train import TrainJob, batches, choose_precision, main, settings_problem
from aigrid.store.evals import EvalRun
from aigrid.store.learned import LearnedModel


def test_batches_keep_padded_tokens_under_the_bound_and_cover_every_example_once() -> None:
    lengths = [900, 100, 120, 1000, 300, 2500, 110]
    groups = batches(lengths, 1024, seed=3)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        assert len(group) == 1 or max(lengths[i] for i in group) * len(group) <= 1024
    assert batches(lengths, 1024, seed=3) == groups, "the order is fixed by the seed"
    assert [sorted(g) for g in groups] != [sorted(g) for g in batches(lengths, 4096, seed=3)]


@pytest.mark.parametrize(
    ("setting", "flags", "chosen"),
    [
        ("auto", frozenset({"avx2", "amx_bf16", "amx_tile"}), "bf16"),
        ("auto", frozenset({"avx2", "avx512_bf16"}), "bf16"),
        ("auto", frozenset({"avx2", "fma"}), "fp32"),
        ("auto", None, "fp32"),
        ("fp32", frozenset({"amx_bf16"}), "fp32"),
        ("bf16", frozenset(), "bf16"),
    ],
)
def test_precision_is_bf16_only_where_the_cpu_has_bf16_units_or_it_is_asked(
    setting: str, flags: frozenset[str] | None, chosen: str
) -> None:
    assert choose_precision(setting, flags) == chosen


def test_bad_settings_are_refused_with_the_setting_named() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainJob(base="b.gguf", dataset="d.jsonl", rank=0)
    assert settings_problem(caught.value).startswith("'rank'")
    with pytest.raises(ValidationError) as caught:
        TrainJob.model_validate({"base": "b", "dataset": "d", "learning_rte": 0.1})
    assert "learning_rte" in settings_problem(caught.value)


def test_a_job_folder_round_trips_and_a_missing_or_broken_one_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = TrainJob(base="base.gguf", dataset="data.jsonl", max_steps=3)
    job.write(tmp_path / "job")
    assert TrainJob.read(tmp_path / "job") == job
    assert main([str(tmp_path / "nowhere")]) == 1
    assert "no job.json" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "job.json").write_text("{}")
    assert main([str(tmp_path / "broken")]) == 1
    assert "is not a training job" in capsys.readouterr().err
    assert main([]) == 2


def test_a_dataset_line_that_does_not_end_with_the_answer_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    base = tmp_path / "base.gguf"
    base.write_bytes(b"GGUF")
    TrainJob(base=str(base), dataset=str(data)).write(tmp_path / "job")
    assert main([str(tmp_path / "job")]) == 1
    assert "data.jsonl:1: not a chat example ending in the assistant's answer" in capsys.readouterr().err


def test_held_out_requests_are_found_in_any_turn_of_a_prompt() -> None:
    held = suite("entry").tasks("heldout")[0]["input"]
    unseen = suite("entry").tasks("unseen")[0]["input"]
    trained = suite("entry").tasks("train")[0]["input"]
    system = {"role": "system", "content": "Plan."}
    for sentence in (held, unseen):
        example = [system, {"role": "user", "content": f"Request: {sentence}"}]
        assert asks_held_out(example)
        assert asks_held_out([system, example[1], {"role": "user", "content": "Request: buy tea"}])
    assert not asks_held_out([system, {"role": "user", "content": f"Request: {trained}"}])


def test_a_retried_prompt_is_cut_back_to_the_request() -> None:
    first = [{"role": "system", "content": "Plan."}, {"role": "user", "content": "Request: buy tea"}]
    retried = [
        *first,
        {"role": "assistant", "content": "{}"},
        {"role": "user", "content": "That plan cannot run: no steps. Write it again, fixed."},
    ]
    assert _first_prompt(retried) == first
    assert _first_prompt(first) == first
    unkept = [
        *first,
        retried[2],
        {"role": "user", "content": f"{UNKEPT_PREFIX} it says 3. Write it again, fixed."},
    ]
    assert _first_prompt(unkept) == first


def _run(metrics: dict[str, list[int]], state: str = "done") -> EvalRun:
    return EvalRun("evr-x", 1, "entry", "heldout", "m", True, state, 40, 40, metrics, None, 0, 1)


def test_the_gate_promotes_only_a_win_beyond_the_noise_that_buys_nothing_it_must_not() -> None:
    old = _run({"all": [5, 40], "must_buy_nothing": [17, 17]})
    assert gate(old, _run({"all": [30, 40], "must_buy_nothing": [17, 17]}))["promoted"]
    close = gate(old, _run({"all": [9, 40], "must_buy_nothing": [17, 17]}))
    assert not close["promoted"] and "overlap" in close["reason"]
    reckless = gate(old, _run({"all": [30, 40], "must_buy_nothing": [2, 17]}))
    assert not reckless["promoted"] and "must not" in reckless["reason"]
    unfinished = gate(old, _run({"all": [40, 40]}, state="failed"))
    assert not unfinished["promoted"] and "did not finish" in unfinished["reason"]


def test_a_promotion_changes_the_model_a_kind_uses_and_its_suites_default() -> None:
    roles = ModelRoles({"planner": "local", "compiler": "big", "agents": "local"})
    defaults = SuiteModels(roles)
    roles.use("planner", "smollm2@planner-1")
    assert roles.model("planner") == "smollm2@planner-1" and defaults["entry"] == "smollm2@planner-1"
    assert defaults["compiler"] == "big" and set(defaults) == {"entry", "compiler", "tools"}
    roles.use("planner", None)
    assert roles.model("planner") == "local" == roles.configured("planner")


def _version(lineage: dict[str, Any]) -> LearnedModel:
    return LearnedModel(1, "m@planner-1", "planner", "m", "ds", "candidate", "f", "a", lineage, None, 0, 0)


def test_a_next_round_samples_the_tasks_after_its_students_round_and_wraps_around() -> None:
    tasks = [{"id": n} for n in range(10)]
    assert _after(None) == 0, "the first round starts at the first task"
    assert _after(_version({"tasks": {"start": 4, "count": 4}})) == 8
    assert _after(_version({})) == 0, "a version trained without a round starts over"
    assert [t["id"] for t in _window(tasks, 8, 4)] == [8, 9, 0, 1]
    assert [t["id"] for t in _window(tasks, 23, 2)] == [3, 4]
    assert len(_window(tasks, 0, None)) == 10 and len(_window(tasks, 5, 99)) == 10
    assert _window([], 3, 2) == []
