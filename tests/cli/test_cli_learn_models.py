"""`aigrid learn dataset|train|resume|models|model|promote|rollback|round|rounds` against a fake API."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.cli.conftest import FakeServer, run

from aigrid.cli import client, common, learn_models, learn_rounds

# Every test here talks to the fake server, never a real one.
pytestmark = pytest.mark.usefixtures("environment")

NAME = "smollm2-135m@planner-1"
MODEL_PATH = "/v1/learn/models/smollm2-135m@planner-1"
JOB = {
    "rank": 16,
    "alpha": 32,
    "learning_rate": 0.0003,
    "epochs": 1.0,
    "max_steps": 120,
    "batch_tokens": 2048,
    "max_tokens": 2048,
    "threads": 16,
    "seed": 0,
    "checkpoint_every": 10,
    "precision": "auto",
}
DATASET = {
    "id": "ds-0a1b2c3d4e5f",
    "object": "dataset",
    "kind": "planner",
    "examples": 1234,
    "sources": {"trace": 1200, "correction": 4, "sample": 30},
    "left_out": {"held_out": 3, "duplicate": 7},
    "sha256": "9f" * 32,
    "created_at": 1765000000,
}
GATE = {
    "promoted": False,
    "reason": "not apart from the noise: candidate 25/43 vs in use 22/43 (95% intervals overlap)",
    "metrics": {
        "all": {"incumbent": [22, 43], "candidate": [25, 43]},
        "must_buy_nothing": {"incumbent": [10, 10], "candidate": [9, 10]},
    },
    "incumbent": "smollm2-135m",
    "candidate": NAME,
    "runs": ["evr-0old00", "evr-0new00"],
}
ROUND_FIGURES = {
    "round": 1,
    "tasks": 30,
    "solved": 28,
    "pass_rate": {
        "student": {"passed": 48, "tried": 120, "rate": 0.4},
        "teacher": {"passed": 27, "tried": 30, "rate": 0.9},
    },
    "seconds": 95.0,
}


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


def _model(state: str, step: int = 0, **extra: Any) -> dict[str, Any]:
    """A learned version as the API shows it, at ``step`` of 120 while it trains."""
    training: dict[str, Any] = {"step": step, "steps": 120, "loss": 1.2345 if step else None}
    training["eta_s"] = (120 - step) * 2.5 if step else None
    if state != "training":
        events = [
            {"event": "data", "examples": 1234, "kept": 1230, "too_long": 4},
            {"event": "done", "adapter": "/data/learned/adapter.gguf"},
        ]
        training |= {"seconds": 340.2, "events": events}
    lineage: dict[str, Any] = {
        "base": "smollm2-135m",
        "dataset": DATASET["id"],
        "job": JOB,
        "training": training,
    }
    shown = {
        "id": NAME,
        "object": "learned_model",
        "kind": "planner",
        "base": "smollm2-135m",
        "dataset": DATASET["id"],
        "state": state,
        "adapter": None,
        "lineage": lineage,
        "error": None,
        "created_at": 1765000000,
        "updated_at": 1765000340,
        "served": state in ("candidate", "promoted"),
    }
    return shown | extra


@dataclass
class Scripted(FakeServer):
    """The fake server, also answering a route with a list of bodies in turn (the last one for good).

    A body given as bytes is answered as a JSON-lines file, as the export route answers.
    """

    scripts: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def script(self, method: str, path: str, *bodies: Any) -> None:
        self.scripts[(method, path)] = list(bodies)

    def handle(self, request: httpx.Request) -> httpx.Response:
        script = self.scripts.get((request.method, request.url.path))
        if not script:
            return super().handle(request)
        self.requests.append(request)
        body = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(body, bytes):
            return httpx.Response(200, content=body, headers={"content-type": "application/jsonl"})
        return httpx.Response(200, json=body)

    def sent(self) -> list[tuple[str, str]]:
        return [(r.method, r.url.path) for r in self.requests]


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Scripted:
    fake = Scripted()
    transport = httpx.MockTransport(fake.handle)
    monkeypatch.setattr(common, "connect", functools.partial(client.connect, transport=transport))
    monkeypatch.setattr(learn_models, "_LOOK_S", 0.0)
    monkeypatch.setattr(learn_rounds, "_LOOK_S", 0.0)
    return fake


def _rows(output: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in output.splitlines() if line.split()}


# -- datasets ---------------------------------------------------------------------------------------------


def test_dataset_build_posts_the_kind_and_says_what_it_holds(scripted: Scripted) -> None:
    scripted.answer("POST", "/v1/learn/datasets", DATASET, status=201)
    result = run("learn", "dataset", "build", "--tenant", "acme")
    assert result.exit_code == 0, result.output
    assert scripted.last_body() == {"kind": "planner", "tenant": "acme"}
    assert "Built dataset ds-0a1b2c3d4e5f of planner: 1,234 examples." in result.stdout
    assert "from: trace 1,200, correction 4, sample 30" in result.stdout
    assert "left out: held_out 3, duplicate 7" in result.stdout
    assert "'aigrid learn train --dataset ds-0a1b2c3d4e5f --kind planner'" in result.stdout
    as_json = run("learn", "dataset", "build", "--kind", "compiler", "--json")
    assert json.loads(as_json.stdout) == DATASET
    assert scripted.last_body() == {"kind": "compiler"}


def test_dataset_build_of_no_examples_says_there_is_nothing_to_train_on(scripted: Scripted) -> None:
    scripted.answer("POST", "/v1/learn/datasets", DATASET | {"examples": 0, "sources": {}}, status=201)
    result = run("learn", "dataset", "build", "--kind", "agents")
    assert result.exit_code == 0, result.output
    assert "0 examples" in result.stdout and "nothing to train on" in result.stdout
    assert "from: —" in result.stdout


def test_dataset_list_is_a_table(scripted: Scripted) -> None:
    body = {"object": "list", "data": [DATASET]}
    scripted.answer("GET", "/v1/learn/datasets", body)
    result = run("learn", "dataset", "list", "--kind", "planner")
    assert result.exit_code == 0, result.output
    assert dict(scripted.last.url.params) == {"kind": "planner"}
    row = _rows(result.stdout)["ds-0a1b2c3d4e5f"]
    assert row[:3] == ["ds-0a1b2c3d4e5f", "planner", "1,234"]
    assert "trace 1,200, correction 4, sample 30" in result.stdout
    assert "9f9f9f9f9f9f" in row and "2025-12-06" in row
    assert json.loads(run("learn", "dataset", "list", "--json").stdout) == body
    assert dict(scripted.last.url.params) == {}


def test_dataset_show_prints_its_first_examples(scripted: Scripted) -> None:
    messages = [
        {"role": "system", "content": "You plan.\n\nAnswer with JSON." + " and more" * 40},
        {"role": "user", "content": "Request: buy the cheapest earbuds"},
        {"role": "assistant", "content": '{"steps": []}'},
    ]
    scripted.answer(
        "GET", "/v1/learn/datasets/ds-0a1b2c3d4e5f", DATASET | {"preview": [{"messages": messages}]}
    )
    result = run("learn", "dataset", "show", "ds-0a1b2c3d4e5f", "--examples", "1")
    assert result.exit_code == 0, result.output
    assert dict(scripted.last.url.params) == {"examples": "1"}
    assert (
        "Dataset ds-0a1b2c3d4e5f of planner: 1,234 examples, made 2025-12-06 05:46:40 UTC." in result.stdout
    )
    assert "Example 1:" in result.stdout
    assert "  system: You plan. Answer with JSON. and more" in result.stdout
    assert "…" in result.stdout, "a long message is cut"
    assert "  user: Request: buy the cheapest earbuds" in result.stdout
    assert '  assistant: {"steps": []}' in result.stdout


def test_dataset_show_of_too_many_examples_is_refused_before_any_request(scripted: Scripted) -> None:
    result = run("learn", "dataset", "show", "ds-0a1b2c3d4e5f", "--examples", "21")
    assert result.exit_code == 2
    assert "--examples" in result.stderr
    assert scripted.requests == []


_LINES = (
    b'{"messages": [{"role": "user", "content": "a"}]}\n{"messages": [{"role": "user", "content": "b"}]}\n'
)
EXPORT = "/v1/learn/datasets/ds-0a1b2c3d4e5f/export"


def test_dataset_export_writes_the_lines_to_stdout(scripted: Scripted) -> None:
    scripted.script("GET", EXPORT, _LINES)
    result = run("learn", "dataset", "export", "ds-0a1b2c3d4e5f")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == _LINES
    assert scripted.sent() == [("GET", EXPORT)]


def test_dataset_export_writes_a_file(scripted: Scripted, tmp_path: Path) -> None:
    scripted.script("GET", EXPORT, _LINES)
    file = tmp_path / "planner.jsonl"
    result = run("learn", "dataset", "export", "ds-0a1b2c3d4e5f", "-o", str(file))
    assert result.exit_code == 0, result.output
    assert file.read_bytes() == _LINES
    assert f"Wrote 2 examples of ds-0a1b2c3d4e5f to {file} ({len(_LINES)} bytes)." in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["planner.jsonl"], "no part file is left"


def test_dataset_export_refuses_to_overwrite_a_file_unless_forced(scripted: Scripted, tmp_path: Path) -> None:
    scripted.script("GET", EXPORT, _LINES)
    file = tmp_path / "planner.jsonl"
    file.write_text("mine\n", encoding="utf-8")
    refused = run("learn", "dataset", "export", "ds-0a1b2c3d4e5f", "--output", str(file))
    assert refused.exit_code == 2
    assert f"error: {file} exists: give --force to overwrite it" in refused.stderr
    assert "Traceback" not in refused.output
    assert file.read_text(encoding="utf-8") == "mine\n"
    assert scripted.requests == []
    forced = run("learn", "dataset", "export", "ds-0a1b2c3d4e5f", "-o", str(file), "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert file.read_bytes() == _LINES
    assert json.loads(forced.stdout) == {
        "object": "export",
        "dataset": "ds-0a1b2c3d4e5f",
        "file": str(file),
        "examples": 2,
        "bytes": len(_LINES),
    }


def test_dataset_export_of_an_unknown_dataset_writes_no_file(scripted: Scripted, tmp_path: Path) -> None:
    scripted.answer("GET", "/v1/learn/datasets/ds-nope/export", _error("No dataset 'ds-nope'."), status=404)
    file = tmp_path / "nope.jsonl"
    result = run("learn", "dataset", "export", "ds-nope", "-o", str(file))
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: No dataset 'ds-nope'."
    assert list(tmp_path.iterdir()) == []
    to_stdout = run("learn", "dataset", "export", "ds-nope")
    assert to_stdout.exit_code == 1
    assert to_stdout.stdout == ""


# -- training ---------------------------------------------------------------------------------------------


def test_train_posts_the_settings_and_follows_the_training_to_a_candidate(scripted: Scripted) -> None:
    scripted.script("POST", "/v1/learn/models", _model("training"))
    scripted.script(
        "GET", MODEL_PATH, _model("training", 40), _model("training", 90), _model("candidate", 120)
    )
    result = run(
        "learn",
        "train",
        "--dataset",
        "ds-0a1b2c3d4e5f",
        "--steps",
        "120",
        "--epochs",
        "2",
        "--rank",
        "8",
        "--learning-rate",
        "0.001",
        "--batch-tokens",
        "1024",
    )
    assert result.exit_code == 0, result.output
    assert scripted.sent() == [("POST", "/v1/learn/models")] + [("GET", MODEL_PATH)] * 3
    assert json.loads(scripted.requests[0].content) == {
        "kind": "planner",
        "dataset": "ds-0a1b2c3d4e5f",
        "train": {"max_steps": 120, "epochs": 2.0, "rank": 8, "learning_rate": 0.001, "batch_tokens": 1024},
        "wait": 0,
    }
    assert f"{NAME} is a candidate: 120/120 steps, loss 1.234, in 5m 40s." in result.stdout
    assert f"'aigrid learn promote {NAME}'" in result.stdout


def test_train_shows_steps_loss_and_time_left_on_a_terminal(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted.script("POST", "/v1/learn/models", _model("training", 30))
    scripted.script("GET", MODEL_PATH, _model("candidate", 120))
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    result = run("learn", "train", "--dataset", "ds-0a1b2c3d4e5f", "--kind", "planner")
    assert result.exit_code == 0, result.output
    assert f"training {NAME}" in result.stderr
    assert "30/120" in result.stderr and "loss 1.234" in result.stderr and "3m 45s left" in result.stderr
    assert json.loads(scripted.requests[0].content)["train"] == {}


def test_train_that_fails_prints_the_error_and_exits_1(scripted: Scripted) -> None:
    failed = _model("failed", 12, error="out of memory at step 12")
    scripted.script("POST", "/v1/learn/models", _model("training"))
    scripted.script("GET", MODEL_PATH, _model("training", 12), failed)
    result = run("learn", "train", "--dataset", "ds-0a1b2c3d4e5f")
    assert result.exit_code == 1
    assert f"{NAME} failed: 12/120 steps" in result.stdout
    assert "error: out of memory at step 12" in result.stdout
    assert f"'aigrid learn resume {NAME}'" in result.stdout
    scripted.script("POST", "/v1/learn/models", _model("training"))
    scripted.script("GET", MODEL_PATH, failed)
    as_json = run("learn", "train", "--dataset", "ds-0a1b2c3d4e5f", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == failed


def test_train_interrupted_says_the_training_goes_on(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted.script("POST", "/v1/learn/models", _model("training", 3))

    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupted)
    result = run("learn", "train", "--dataset", "ds-0a1b2c3d4e5f")
    assert result.exit_code == 130
    assert f"{NAME} goes on training: see it with 'aigrid learn model {NAME}'" in result.stderr


def test_train_no_wait_starts_it_and_returns(scripted: Scripted) -> None:
    scripted.script("POST", "/v1/learn/models", _model("training"))
    result = run("learn", "train", "--dataset", "ds-0a1b2c3d4e5f", "--kind", "compiler", "--no-wait")
    assert result.exit_code == 0, result.output
    assert scripted.sent() == [("POST", "/v1/learn/models")]
    assert scripted.last_body()["kind"] == "compiler"
    assert (
        f"{NAME} is training on ds-0a1b2c3d4e5f: follow it with 'aigrid learn model {NAME}'." in result.stdout
    )


def test_train_on_a_dataset_of_another_kind_shows_the_servers_message(scripted: Scripted) -> None:
    message = "Dataset 'ds-0a1b2c3d4e5f' is of kind 'planner', not 'agents'."
    scripted.answer("POST", "/v1/learn/models", _error(message), status=400)
    result = run("learn", "train", "--dataset", "ds-0a1b2c3d4e5f", "--kind", "agents")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {message}"
    assert scripted.sent() == [("POST", "/v1/learn/models")]


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--dataset", "ds-1", "--steps", "-5"],
        ["train", "--dataset", "ds-1", "--epochs", "-1"],
        ["train", "--dataset", "ds-1", "--learning-rate", "0"],
        ["train", "--dataset", "ds-1", "--rank", "0"],
        ["round", "--tasks", "-1"],
        ["round", "-k", "-2"],
        ["round", "--temperature", "-0.5"],
        ["promote", NAME, "--limit", "-3"],
    ],
)
def test_a_negative_or_zero_number_is_refused_before_any_request(scripted: Scripted, args: list[str]) -> None:
    result = run("learn", *args)
    assert result.exit_code == 2
    assert "Invalid value for" in result.stderr
    assert "Traceback" not in result.output
    assert scripted.requests == []


@pytest.mark.parametrize(
    "args",
    [
        ["dataset", "build", "--kind", "chat"],
        ["dataset", "list", "--kind", "chat"],
        ["train", "--dataset", "ds-1", "--kind", "chat"],
        ["models", "--kind", "chat"],
        ["rollback", "chat"],
        ["round", "--kind", "chat"],
    ],
)
def test_an_unknown_kind_is_refused_before_any_request(scripted: Scripted, args: list[str]) -> None:
    result = run("learn", *args)
    assert result.exit_code == 2
    assert "'chat' is not one of 'planner', 'compiler', 'agents'" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert scripted.requests == []


def test_resume_follows_the_training_from_its_checkpoint(scripted: Scripted) -> None:
    scripted.script("POST", f"{MODEL_PATH}/resume", _model("training", 60))
    scripted.script("GET", MODEL_PATH, _model("candidate", 120))
    result = run("learn", "resume", NAME)
    assert result.exit_code == 0, result.output
    assert scripted.sent() == [("POST", f"{MODEL_PATH}/resume"), ("GET", MODEL_PATH)]
    assert json.loads(scripted.requests[0].content) == {"wait": 0}
    assert f"{NAME} is a candidate" in result.stdout


def test_resume_of_a_version_that_did_not_fail_shows_the_servers_message(scripted: Scripted) -> None:
    message = f"'{NAME}' is candidate; only a failed training can be resumed."
    scripted.answer("POST", f"{MODEL_PATH}/resume", _error(message), status=409)
    result = run("learn", "resume", NAME)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {message}"


# -- versions ---------------------------------------------------------------------------------------------


def _listing() -> dict[str, Any]:
    kept = _model("kept", 120) | {"id": "smollm2-135m@planner-1"}
    kept["lineage"] = kept["lineage"] | {"rounds": [ROUND_FIGURES], "gate": GATE}
    promoted = _model("promoted", 120) | {"id": "smollm2-135m@planner-2"}
    promoted["lineage"] = promoted["lineage"] | {"gate": GATE | {"promoted": True}}
    training = _model("training", 30) | {"id": "smollm2-135m@compiler-1", "kind": "compiler"}
    return {
        "object": "list",
        "data": [training, promoted, kept],
        "in_use": {"planner": "smollm2-135m@planner-2", "compiler": "local", "agents": "local"},
        "history": [
            {
                "kind": "planner",
                "model": "smollm2-135m@planner-2",
                "action": "promote",
                "reason": "candidate 31/43 beats 22/43 in use",
                "at": 1765000000,
            },
        ],
    }


def test_models_lists_the_versions_and_the_model_in_use_per_kind(scripted: Scripted) -> None:
    body = _listing()
    scripted.answer("GET", "/v1/learn/models", body)
    result = run("learn", "models")
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    training = " ".join(rows["smollm2-135m@compiler-1"])
    assert training.startswith("smollm2-135m@compiler-1 compiler training ds-0a1b2c3d4e5f 30/120 steps")
    assert "loss 1.234, 3m 45s left" in training
    kept = " ".join(rows["smollm2-135m@planner-1"])
    assert kept.startswith("smollm2-135m@planner-1 planner kept ds-0a1b2c3d4e5f 120/120 steps, loss 1.234")
    assert "student 40.0%, teacher 90.0%" in kept
    assert "kept: 25/43 vs 22/43 in use" in kept and kept.endswith("no")
    promoted = " ".join(rows["smollm2-135m@planner-2"])
    assert "promoted: 25/43 vs 22/43 in use" in promoted and promoted.endswith("yes")
    assert (
        "planner: smollm2-135m@planner-2 (learned); last change: promote at 2025-12-06 05:46:40 UTC"
        in result.stdout
    )
    assert "compiler: local (configured)" in result.stdout
    assert "agents: local (configured)" in result.stdout
    assert json.loads(run("learn", "models", "--json").stdout) == body


def test_models_of_one_kind_says_only_that_kinds_model_in_use(scripted: Scripted) -> None:
    scripted.answer("GET", "/v1/learn/models", _listing())
    result = run("learn", "models", "--kind", "compiler")
    assert result.exit_code == 0, result.output
    assert dict(scripted.last.url.params) == {"kind": "compiler"}
    assert "compiler: local (configured)" in result.stdout
    assert "planner:" not in result.stdout


def test_models_when_none_was_trained_yet(scripted: Scripted) -> None:
    body = {"object": "list", "data": [], "in_use": {"planner": "local"}, "history": []}
    scripted.answer("GET", "/v1/learn/models", body)
    result = run("learn", "models")
    assert result.exit_code == 0, result.output
    assert "No learned version yet: 'aigrid learn train --dataset ID' makes one." in result.stdout
    assert "planner: local (configured)" in result.stdout
    assert "last change" not in result.stdout


def test_model_shows_the_lineage(scripted: Scripted) -> None:
    shown = _model("kept", 120)
    shown["lineage"] |= {
        "student": "smollm2-135m",
        "rounds": [ROUND_FIGURES],
        "sampling": {"k": 4, "temperature": 0.8, "teacher": "code", "experience": True},
        "gate": GATE,
    }
    scripted.answer("GET", MODEL_PATH, shown)
    result = run("learn", "model", NAME)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"{NAME} (planner) is kept, not served." in out
    assert "base: smollm2-135m" in out and "dataset: ds-0a1b2c3d4e5f" in out
    assert "job: rank 16, alpha 32, learning_rate 0.0003, epochs 1.0, max_steps 120" in out
    assert "sampled by smollm2-135m: k 4, temperature 0.8, teacher code, experience True" in out
    rounds = _rows(out)["1"]
    assert rounds == ["1", "30", "28", "48/120", "(40.0%)", "27/30", "(90.0%)", "1m", "35s"]
    assert "Training: 120/120 steps, loss 1.234, in 5m 40s." in out
    assert _rows(out)["data"] == ["data", "examples", "1234,", "kept", "1230,", "too_long", "4"]
    assert _rows(out)["done"] == ["done", "adapter", "/data/learned/adapter.gguf"]
    assert f"Kept: {NAME} did not win; smollm2-135m stays in use." in out
    assert "reason: not apart from the noise" in out
    assert _rows(out)["all"] == ["all", "22/43", "(51.2%)", "25/43", "(58.1%)"]
    assert "'aigrid learn compare evr-0old00 evr-0new00'" in out


def test_model_unknown_shows_the_servers_404(scripted: Scripted) -> None:
    scripted.answer(
        "GET", "/v1/learn/models/nope@planner-9", _error("No learned model 'nope@planner-9'."), 404
    )
    result = run("learn", "model", "nope@planner-9")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: No learned model 'nope@planner-9'."
    assert result.stdout == ""


# -- the gate ---------------------------------------------------------------------------------------------


def test_promote_kept_is_a_decision_not_an_error(scripted: Scripted) -> None:
    scripted.answer("POST", f"{MODEL_PATH}/promote", {"object": "promotion", **GATE})
    result = run("learn", "promote", NAME, "--limit", "20", "--no-experience")
    assert result.exit_code == 0, result.output
    assert scripted.last_body() == {"limit": 20, "experience": False}
    assert "Running the held-out evals of" in result.stderr and "this may take minutes" in result.stderr
    assert f"Kept: {NAME} did not win; smollm2-135m stays in use." in result.stdout
    assert "reason: not apart from the noise: candidate 25/43 vs in use 22/43" in result.stdout
    assert "in use: smollm2-135m" in result.stdout and f"candidate: {NAME}" in result.stdout
    assert _rows(result.stdout)["must_buy_nothing"] == [
        "must_buy_nothing",
        "10/10",
        "(100.0%)",
        "9/10",
        "(90.0%)",
    ]


def test_promote_promoted_says_it_is_in_use(scripted: Scripted) -> None:
    decision = {"object": "promotion", **GATE, "promoted": True, "reason": "candidate 25/43 beats 22/43"}
    scripted.answer("POST", f"{MODEL_PATH}/promote", decision)
    result = run("learn", "promote", NAME)
    assert result.exit_code == 0, result.output
    assert scripted.last_body() == {}
    assert f"Promoted: {NAME} is in use now, in place of smollm2-135m." in result.stdout
    as_json = run("learn", "promote", NAME, "--json")
    assert json.loads(as_json.stdout) == decision
    assert as_json.stderr == ""


def test_promote_of_a_version_that_is_not_a_candidate(scripted: Scripted) -> None:
    message = f"'{NAME}' is failed; only a trained candidate can be promoted."
    scripted.answer("POST", f"{MODEL_PATH}/promote", _error(message), status=409)
    result = run("learn", "promote", NAME)
    assert result.exit_code == 1
    assert f"error: {message}" in result.stderr


def test_rollback_posts_the_kind(scripted: Scripted) -> None:
    change = {"object": "rollback", "kind": "planner", "from": "smollm2-135m@planner-2", "to": "smollm2-135m"}
    scripted.answer("POST", "/v1/learn/rollback", change)
    result = run("learn", "rollback", "planner")
    assert result.exit_code == 0, result.output
    assert scripted.last_body() == {"kind": "planner"}
    assert "planner: rolled back from smollm2-135m@planner-2 to smollm2-135m, in use now." in result.stdout
    assert json.loads(run("learn", "rollback", "planner", "--json").stdout) == change


def test_rollback_with_nothing_to_roll_back(scripted: Scripted) -> None:
    message = "Nothing to roll back: compiler uses the configured model."
    scripted.answer("POST", "/v1/learn/rollback", _error(message), status=409)
    result = run("learn", "rollback", "compiler")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {message}"


# -- rounds -----------------------------------------------------------------------------------------------

ROUND_ID = "round-0a1b2c3d4e"
ROUND_PATH = f"/v1/learn/rounds/{ROUND_ID}"


def _round(state: str, **extra: Any) -> dict[str, Any]:
    shown = {
        "id": ROUND_ID,
        "object": "learning_round",
        "kind": "planner",
        "state": state,
        "sampled": 0,
        "tasks": 30,
        "pass_rate": None,
        "dataset": None,
        "model": None,
        "decision": None,
        "error": None,
        "started_at": 1765000000,
        "ended_at": None,
    }
    return shown | extra


def _made(state: str, **extra: Any) -> dict[str, Any]:
    """A round past sampling: its figures, dataset and model."""
    made = {"sampled": 30, "pass_rate": ROUND_FIGURES["pass_rate"], "dataset": DATASET["id"], "model": NAME}
    return _round(state, **made, **extra)


def test_round_starts_and_follows_sampling_training_and_the_gate(scripted: Scripted) -> None:
    scripted.script("POST", "/v1/learn/rounds", _round("sampling"))
    scripted.script(
        "GET",
        ROUND_PATH,
        _round("sampling", sampled=12),
        _made("training"),
        _made("gating"),
        _made("done", decision=GATE, ended_at=1765000999),
    )
    scripted.script("GET", MODEL_PATH, _model("training", 60))
    result = run(
        "learn", "round", "--tasks", "30", "-k", "4", "--temperature", "0.7", "--teacher", "none",
        "--steps", "60", "--epochs", "1.5", "--gate-limit", "10",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(scripted.requests[0].content) == {
        "kind": "planner",
        "tasks": 30,
        "k": 4,
        "temperature": 0.7,
        "gate_limit": 10,
        "teacher": None,
        "train": {"max_steps": 60, "epochs": 1.5},
        "promote": True,
        "wait": 0,
    }
    # The round is looked at until it ends; its model's training while the round trains.
    assert scripted.sent() == [
        ("POST", "/v1/learn/rounds"),
        ("GET", ROUND_PATH),
        ("GET", ROUND_PATH),
        ("GET", MODEL_PATH),
        ("GET", ROUND_PATH),
        ("GET", ROUND_PATH),
    ]
    out = result.stdout
    assert f"Round {ROUND_ID} (planner) is done: 30/30 tasks sampled." in out
    assert "pass rate: student 48/120 (40.0%), teacher 27/30 (90.0%)" in out
    assert f"dataset: ds-0a1b2c3d4e5f, model: {NAME}" in out
    assert f"Kept: {NAME} did not win; smollm2-135m stays in use." in out


def test_round_shows_its_stages_on_a_terminal(scripted: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted.script("POST", "/v1/learn/rounds", _round("sampling", sampled=3))
    scripted.script("GET", ROUND_PATH, _made("training"), _made("done"))
    scripted.script("GET", MODEL_PATH, _model("training", 60))
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    result = run("learn", "round", "--teacher", "code", "--no-promote")
    assert result.exit_code == 0, result.output
    assert f"round {ROUND_ID}: sampling" in result.stderr and "3/30" in result.stderr
    assert f"round {ROUND_ID}: training {NAME}" in result.stderr and "60/120" in result.stderr
    assert "loss 1.234, 2m 30s left" in result.stderr
    body = json.loads(scripted.requests[0].content)
    assert body["teacher"] == "code" and body["promote"] is False and body["train"] == {}


def test_round_without_the_gate_says_how_to_run_it(scripted: Scripted) -> None:
    scripted.script("POST", "/v1/learn/rounds", _made("done"))
    result = run("learn", "round", "--no-promote", "--kind", "compiler")
    assert result.exit_code == 0, result.output
    assert scripted.sent() == [("POST", "/v1/learn/rounds")], "a round that ended is not looked at again"
    assert f"The gate did not run: run it with 'aigrid learn promote {NAME}'." in result.stdout


def test_round_that_fails_prints_the_error_and_exits_1(scripted: Scripted) -> None:
    error = f"training {NAME} failed: out of memory"
    scripted.script("POST", "/v1/learn/rounds", _round("sampling"))
    scripted.script("GET", ROUND_PATH, _made("failed", error=error))
    result = run("learn", "round")
    assert result.exit_code == 1
    assert f"Round {ROUND_ID} (planner) is failed" in result.stdout
    assert f"error: {error}" in result.stdout


def test_round_no_wait_and_json(scripted: Scripted) -> None:
    started = _round("sampling")
    scripted.script("POST", "/v1/learn/rounds", started)
    result = run("learn", "round", "--no-wait", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == started
    assert scripted.sent() == [("POST", "/v1/learn/rounds")]


def test_round_with_a_teacher_the_grid_lacks_shows_the_servers_message(scripted: Scripted) -> None:
    message = "'teacher' must be 'code' (plans written from the task's rule), a model on this grid, or null."
    scripted.answer("POST", "/v1/learn/rounds", _error(message), status=400)
    result = run("learn", "round", "--teacher", "gpt-9")
    assert result.exit_code == 1
    assert scripted.last_body()["teacher"] == "gpt-9"
    assert result.stderr.strip() == f"error: {message}"


def test_rounds_lists_them(scripted: Scripted) -> None:
    body = {
        "object": "list",
        "data": [_made("done", decision=GATE), _round("sampling", id="round-ffff", sampled=2)],
    }
    scripted.answer("GET", "/v1/learn/rounds", body)
    result = run("learn", "rounds")
    assert result.exit_code == 0, result.output
    done = " ".join(_rows(result.stdout)[ROUND_ID])
    assert done.startswith(f"{ROUND_ID} planner done 30/30 student 48/120 (40.0%), teacher 27/30 (90.0%)")
    assert f"ds-0a1b2c3d4e5f {NAME} kept 2025-12-06" in done
    assert _rows(result.stdout)["round-ffff"][:5] == ["round-ffff", "planner", "sampling", "2/30", "—"]
    assert json.loads(run("learn", "rounds", "--json").stdout) == body
