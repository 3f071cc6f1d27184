"""The whole weight loop on the embedded model, tiny: traces → dataset → LoRA → a served version → gate.

The traces are written straight into the server's database (as if entries had run and the world
had verified them): eight planner tasks whose verified answer is the same odd phrase. Six training
steps are enough for the adapter to change what the model answers; the base model is unchanged,
and the gate keeps a version that does not beat the model in use.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gguf import GGUFReader
from tests.support import ADMIN_KEY, LiveServer

from aigrid.grid.engine.model import default_model_path
from aigrid.learn.suites import suite
from aigrid.learn.train import TrainJob
from aigrid.store.db import make_engine, sqlite_url
from aigrid.store.traces import TraceStore

pytestmark = pytest.mark.slow

ANSWER = "PURPLE ZEBRA"
SYSTEM = {"role": "system", "content": "You answer with a colour."}
# A small engine: the learned version starts one more.
SERVER_CONFIG = """
[[models]]
name = "smollm2-135m"
aliases = ["local"]
[[models.deployments]]
backend = "embedded"
tier = "edge"
context_length = 1024
parallel = 1
cache_sequences = 0
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("training"), SERVER_CONFIG).start()
    yield srv
    srv.stop()


def _admin(server: LiveServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.request(method, server.url + path, headers=headers, timeout=600, **kwargs)


def _write_traces(server: LiveServer) -> None:
    traces = TraceStore(make_engine(sqlite_url(server.data_dir)))
    admin = 1

    def trace(subject: str, text: str, outcome: str, answer: str = ANSWER) -> None:
        messages = [SYSTEM, {"role": "user", "content": f"Request: {text}"}]
        traces.record(admin, "entry", subject, text, outcome=outcome, messages=messages, answer=answer)  # type: ignore[arg-type]

    for n in range(8):
        trace(f"ent-{n}", f"Question {n}: what colour is it?", "success")
    trace("ent-dup", "Question 0: what colour is it?", "success")
    trace("ent-fail", "What colour, again?", "failure", "GREEN")
    trace("ent-held", suite("entry").tasks("heldout")[0]["input"], "success")


def _ask(server: LiveServer, model: str, text: str) -> httpx.Response:
    body = {
        "model": model,
        "temperature": 0,
        "max_tokens": 8,
        "messages": [SYSTEM, {"role": "user", "content": f"Request: {text}"}],
    }
    return _admin(server, "POST", "/v1/chat/completions", json=body)


def test_verified_traces_train_a_version_that_is_served_changed_and_gated(server: LiveServer) -> None:
    _write_traces(server)
    built = _admin(server, "POST", "/v1/learn/datasets", json={"kind": "planner"})
    assert built.status_code == 201, built.text
    dataset = built.json()
    assert dataset["examples"] == 8 and dataset["sources"] == {"trace": 8}
    assert dataset["left_out"] == {"duplicate": 1, "not_verified": 1, "held_out": 1}
    lines = _admin(server, "GET", f"/v1/learn/datasets/{dataset['id']}/export").text.splitlines()
    assert len(lines) == 8
    assert json.loads(lines[0])["messages"][-1] == {"role": "assistant", "content": ANSWER}

    body = {
        "kind": "planner",
        "dataset": dataset["id"],
        "train": {"max_steps": 6, "learning_rate": 0.002, "batch_tokens": 256, "checkpoint_every": 3},
        "wait": 600,
    }
    trained = _admin(server, "POST", "/v1/learn/models", json=body)
    assert trained.status_code == 200, trained.text
    model = trained.json()
    assert model["id"] == "smollm2-135m@planner-1" and model["state"] == "candidate", model
    assert model["served"] and model["lineage"]["training"]["step"] == 6
    assert model["lineage"]["dataset"] == dataset["id"] and model["lineage"]["base"] == "smollm2-135m"
    files = model["lineage"]["files"]
    assert files["adapter"].endswith("adapter.gguf") and files["model"].endswith("model.gguf"), files
    merged = next(e for e in model["lineage"]["training"]["events"] if e["event"] == "merged")
    assert merged["tensors"] == 7 * 30, "every projection of every layer is merged"

    question = "Question 11: what colour is it?"
    learned = _ask(server, model["id"], question).json()["choices"][0]["message"]["content"]
    base = _ask(server, "smollm2-135m", question).json()["choices"][0]["message"]["content"]
    assert learned.strip() == ANSWER, learned
    assert ANSWER not in base, "the base model is not changed by its adapter"

    # A next version trained on top of this one starts from what it learned (one tiny step).
    body |= {"from": model["id"], "train": {"max_steps": 1, "learning_rate": 1e-6, "batch_tokens": 256}}
    child = _admin(server, "POST", "/v1/learn/models", json=body).json()
    assert child["id"] == "smollm2-135m@planner-2" and child["state"] == "candidate", child
    assert child["lineage"]["parent"] == model["id"] and child["lineage"]["job"]["base"] == files["model"]
    inherited = _ask(server, child["id"], question).json()["choices"][0]["message"]["content"]
    assert inherited.strip() == ANSWER, inherited

    decision = _admin(server, "POST", f"/v1/learn/models/{model['id']}/promote", json={"limit": 3}).json()
    assert decision["promoted"] is False and "noise" in decision["reason"], decision
    listed = _admin(server, "GET", "/v1/learn/models").json()
    assert listed["in_use"]["planner"] == "local"
    assert [m["state"] for m in listed["data"]] == ["candidate", "kept"]
    assert _ask(server, model["id"], question).status_code == 404, "a kept version is not served"
    again = _admin(server, "POST", f"/v1/learn/models/{model['id']}/promote", json={})
    assert again.status_code == 409 and "kept" in again.json()["error"]["message"]


def test_bad_requests_get_clear_errors(server: LiveServer) -> None:
    tenant = server.new_tenant_key("trainee")
    refused = httpx.get(server.url + "/v1/learn/models", headers={"Authorization": f"Bearer {tenant}"})
    assert refused.status_code == 403
    cases = [
        ("POST", "/v1/learn/datasets", {"kind": "poems"}, 400, "'kind' must be one of"),
        ("POST", "/v1/learn/models", {"dataset": "ds-none"}, 404, "No dataset 'ds-none'"),
        ("POST", "/v1/learn/models", {"kind": "planner"}, 400, "'dataset' must name a dataset"),
        ("POST", "/v1/learn/models/nobody@planner-9/promote", {}, 404, "No learned model"),
        ("POST", "/v1/learn/models/nobody@planner-9/resume", {}, 404, "No learned model"),
        ("POST", "/v1/learn/rollback", {"kind": "planner"}, 409, "Nothing to roll back"),
        ("POST", "/v1/learn/rounds", {"k": -1}, 400, "'k' must be a whole number"),
        ("POST", "/v1/learn/rounds", {"teacher": "no-such-model"}, 400, "'teacher' must be"),
        ("POST", "/v1/learn/rounds", {"student": "nobody"}, 400, "'student' must be"),
        ("POST", "/v1/learn/rounds", {"start": -1}, 400, "'start' must be a whole number"),
        ("GET", "/v1/learn/rounds/round-none", None, 404, "No round"),
        ("GET", "/v1/learn/datasets/ds-none?examples=1", None, 404, "No dataset"),
    ]
    for method, path, body, status, words in cases:
        answer = _admin(server, method, path, json=body)
        assert answer.status_code == status, (path, answer.text)
        assert words in answer.json()["error"]["message"], (path, answer.text)
    datasets = _admin(server, "GET", "/v1/learn/datasets").json()["data"]
    bad_settings = {"kind": "planner", "dataset": datasets[0]["id"], "train": {"rank": 0}}
    answer = _admin(server, "POST", "/v1/learn/models", json=bad_settings)
    assert answer.status_code == 400 and "'rank'" in answer.json()["error"]["message"], answer.text
    on_top = {"kind": "planner", "dataset": datasets[0]["id"]}
    for parent, status, words in [
        ("local", 400, "'from' must name a learned version"),
        ("nobody@planner-9", 404, "No learned model"),
        ("smollm2-135m@planner-1", 409, "is kept and has no merged model"),
    ]:
        answer = _admin(server, "POST", "/v1/learn/models", json=on_top | {"from": parent})
        assert answer.status_code == status and words in answer.json()["error"]["message"], answer.text
    for count in ("²", "21", "-1"):
        shown = _admin(server, "GET", f"/v1/learn/datasets/{datasets[0]['id']}", params={"examples": count})
        assert shown.status_code == 400 and "'examples' must be" in shown.json()["error"]["message"]


def test_a_restarted_server_lists_its_versions_and_serves_none_that_was_kept(server: LiveServer) -> None:
    server.stop()
    server.start()
    deadline = time.monotonic() + 30
    listed = _admin(server, "GET", "/v1/learn/models").json()
    while not listed["data"] and time.monotonic() < deadline:
        time.sleep(0.5)
        listed = _admin(server, "GET", "/v1/learn/models").json()
    child, kept = listed["data"]
    assert kept["state"] == "kept" and not kept["served"]
    assert child["state"] == "candidate" and child["served"], "a candidate is served again after a restart"


def test_a_training_killed_midway_goes_on_from_its_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    rows = [
        {
            "messages": [
                SYSTEM,
                {"role": "user", "content": f"Request: colour {n}?"},
                {"role": "assistant", "content": ANSWER},
            ]
        }
        for n in range(4)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = default_model_path()
    assert base is not None
    job = tmp_path / "job"
    TrainJob(
        base=str(base), dataset=str(data), max_steps=3, batch_tokens=64, checkpoint_every=1, layers=2
    ).write(job)
    command = [sys.executable, "-m", "aigrid.learn.train", str(job)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert first.stdout is not None
    for line in first.stdout:
        event = json.loads(line)
        if event["event"] == "step" and event["step"] == 2:
            first.kill()
            break
    first.wait()
    again = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    events = [json.loads(line) for line in again.stdout.splitlines()]
    assert again.returncode == 0, again.stderr[-2000:]
    assert {"event": "resumed", "step": 2, "steps": 3} in events
    assert [e["step"] for e in events if e["event"] == "step"] == [3], "only the step left runs"
    assert (job / "model.gguf").is_file() and (job / "adapter.gguf").is_file()
    depth = int(GGUFReader(base).fields["llama.block_count"].contents())
    adapted = {int(t.name.split(".")[1]) for t in GGUFReader(job / "adapter.gguf").tensors}
    assert adapted == {depth - 2, depth - 1}, "layers=2 adapts the top two decoder layers only"


def test_more_layers_than_the_model_has_is_refused_by_name(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    row = {
        "messages": [
            SYSTEM,
            {"role": "user", "content": "Request: colour?"},
            {"role": "assistant", "content": ANSWER},
        ]
    }
    data.write_text(json.dumps(row) + "\n")
    base = default_model_path()
    assert base is not None
    TrainJob(base=str(base), dataset=str(data), max_steps=1, layers=500).write(tmp_path / "job")
    done = subprocess.run(
        [sys.executable, "-m", "aigrid.learn.train", str(tmp_path / "job")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode != 0 and "layers is 500" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
