"""`aigrid feedback`, `aigrid traces` and `aigrid learn ...` against a fake learning API."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.cli.conftest import FakeServer, run

from aigrid.cli import client, common, learn

# Every test here talks to the fake server, never a real one.
pytestmark = pytest.mark.usefixtures("environment")

_FEEDBACK = {
    "id": 3,
    "object": "feedback",
    "kind": "entry",
    "target": "ent-1a2b",
    "rating": -1,
    "comment": "wrong shop",
    "correction": None,
    "created_at": 1765000000,
}


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


def test_feedback_on_an_entry_posts_its_rating_and_comment(fake_server: FakeServer) -> None:
    fake_server.answer("POST", "/v1/feedback", _FEEDBACK, status=201)
    result = run("feedback", "ent-1a2b", "--bad", "--comment", "wrong shop")
    assert result.exit_code == 0, result.output
    assert fake_server.last.method == "POST"
    assert fake_server.last.url.path == "/v1/feedback"
    assert "tenant" not in fake_server.last.url.params
    assert fake_server.last_body() == {"entry": "ent-1a2b", "rating": -1, "comment": "wrong shop"}
    assert "Feedback 3: entry ent-1a2b is rated bad." in result.stdout


@pytest.mark.parametrize(
    ("target", "rating", "body"),
    [
        ("p-0a1b2c3d", "--good", {"process": "p-0a1b2c3d", "rating": 1}),
        ("req_9f8e7d", "--neutral", {"completion": "req_9f8e7d", "rating": 0}),
        ("writer@3", "--good", {"agent": "writer", "version": 3, "rating": 1}),
        ("agent:writer", "--bad", {"agent": "writer", "rating": -1}),
        ("agent:price-watch@12", "--bad", {"agent": "price-watch", "version": 12, "rating": -1}),
        # A version makes it an agent, even one whose name looks like a process id.
        ("p-watch@2", "--good", {"agent": "p-watch", "version": 2, "rating": 1}),
    ],
)
def test_feedback_reads_the_target_kind_from_its_shape(
    fake_server: FakeServer, target: str, rating: str, body: dict[str, Any]
) -> None:
    fake_server.answer("POST", "/v1/feedback", _FEEDBACK, status=201)
    result = run("feedback", target, rating, "--tenant", "acme")
    assert result.exit_code == 0, result.output
    assert fake_server.last_body() == body
    assert fake_server.last.url.params["tenant"] == "acme"


def test_feedback_correction_from_text_or_a_file(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.answer("POST", "/v1/feedback", _FEEDBACK, status=201)
    plan = '{"steps": [{"call": "northwind.search", "arguments": {"q": "lamp"}}]}'
    inline = run("feedback", "ent-1a2b", "--bad", "--correction", plan)
    assert inline.exit_code == 0, inline.output
    assert fake_server.last_body() == {"entry": "ent-1a2b", "rating": -1, "correction": plan}
    file = tmp_path / "plan.json"
    file.write_text(plan + "\n", encoding="utf-8")
    from_file = run("feedback", "ent-1a2b", "--bad", "--correction", f"@{file}")
    assert from_file.exit_code == 0, from_file.output
    assert fake_server.last_body()["correction"] == plan + "\n"


def test_feedback_correction_file_that_cannot_be_read(fake_server: FakeServer, tmp_path: Path) -> None:
    result = run("feedback", "ent-1a2b", "--bad", "--correction", f"@{tmp_path / 'missing.json'}")
    assert result.exit_code == 2
    assert "error: cannot read" in result.stderr and "missing.json" in result.stderr
    assert fake_server.requests == []


@pytest.mark.parametrize("ratings", [[], ["--good", "--bad"], ["--bad", "--neutral"]])
def test_feedback_needs_exactly_one_rating(fake_server: FakeServer, ratings: list[str]) -> None:
    result = run("feedback", "ent-1a2b", *ratings)
    assert result.exit_code == 2
    assert "error: give exactly one of --good, --bad or --neutral" in result.stderr
    assert fake_server.requests == []


@pytest.mark.parametrize(
    "target", ["lamp", "ent-", "e-1", "writer@", "writer@v2", "writer@0", "agent:", "a@b@1"]
)
def test_feedback_refuses_a_target_of_no_known_shape(fake_server: FakeServer, target: str) -> None:
    result = run("feedback", target, "--good")
    assert result.exit_code == 2
    assert f"error: '{target}' is" in result.stderr
    assert "NAME@VERSION" in result.stderr
    assert "Traceback" not in result.output
    assert fake_server.requests == []


def test_feedback_on_something_unknown_prints_the_server_error(fake_server: FakeServer) -> None:
    fake_server.answer("POST", "/v1/feedback", _error("No entry ent-9999."), status=404)
    result = run("feedback", "ent-9999", "--good")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: No entry ent-9999."
    assert result.stdout == ""


def _trace(trace_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": trace_id,
        "object": "trace",
        "kind": "entry",
        "subject": "ent-1a2b",
        "input": "buy the cheapest earbuds",
        "messages": [],
        "answer": "{}",
        "tools": ["northwind.search"],
        "model": "smollm2-135m",
        "outcome": "success",
        "reason": None,
        "cost": 0.0,
        "latency_s": 2.14,
        "created_at": 1765000000,
        "updated_at": 1765000003,
        **extra,
    }


def test_traces_filters_and_shows_a_table(fake_server: FakeServer) -> None:
    failed = _trace(8, kind="compile", subject="draft:2", outcome="failure", reason="x" * 200, latency_s=None)
    body = {"object": "list", "data": [failed, _trace(7)]}
    fake_server.answer("GET", "/v1/traces", body)
    result = run("traces", "--kind", "entry", "--outcome", "failure", "--limit", "5", "--tenant", "acme")
    assert result.exit_code == 0, result.output
    assert dict(fake_server.last.url.params) == {
        "kind": "entry",
        "outcome": "failure",
        "limit": "5",
        "tenant": "acme",
    }
    lines = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["7"], ["8"])]
    assert lines[0][:4] == ["8", "compile", "draft:2", "failure"]
    assert lines[0][4] == "x" * 59 + "…", "a long reason is cut short"
    assert lines[0][5:7] == ["smollm2-135m", "—"]
    assert lines[1] == [
        "7",
        "entry",
        "ent-1a2b",
        "success",
        "—",
        "smollm2-135m",
        "2.1",
        "s",
        "2025-12-06",
        "05:46:40",
    ]
    as_json = run("traces", "--json")
    assert json.loads(as_json.stdout) == body
    assert dict(fake_server.last.url.params) == {"limit": "50"}


def test_traces_refuses_an_unknown_kind_before_any_request(fake_server: FakeServer) -> None:
    result = run("traces", "--kind", "chat")
    assert result.exit_code == 2
    assert "chat" in result.stderr
    assert fake_server.requests == []


_SUITES = {
    "object": "list",
    "data": [
        {
            "name": "entry",
            "description": "sentences for the super entry",
            "metrics": ["buy_or_book", "must_buy_nothing", "all"],
            "splits": {
                "train": {"tasks": 1800, "made": "generated from the services' seed"},
                "heldout": {"tasks": 43, "made": "hand-written"},
            },
        },
        {
            "name": "tools",
            "description": "tool-calling requests",
            "metrics": ["all"],
            "splits": {"heldout": {"tasks": 20, "made": "hand-written"}},
        },
    ],
}


def test_learn_suites_shows_sizes_and_how_each_split_was_made(fake_server: FakeServer) -> None:
    fake_server.answer("GET", "/v1/learn/suites", _SUITES)
    result = run("learn", "suites")
    assert result.exit_code == 0, result.output
    assert fake_server.last.url.path == "/v1/learn/suites"
    entry = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["entry"])
    assert entry.split()[:3] == ["entry", "1,800", "43"]
    assert "buy_or_book, must_buy_nothing, all" in entry
    assert "train: generated from the services' seed" in entry
    assert "held-out: hand-written" in result.stdout
    tools = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["tools"])
    assert tools.split()[:3] == ["tools", "—", "20"]
    assert json.loads(run("learn", "suites", "--json").stdout) == _SUITES


_TAUGHT = {
    "object": "teaching",
    "suite": "entry",
    "taught": 1790,
    "already": 2,
    "refused": 8,
    "refusals": [f"train-{i:04d}: the shop has no such item" for i in range(8)],
    "seconds": 41.0,
}


def test_learn_teach_posts_the_suite_and_prints_what_was_taught(fake_server: FakeServer) -> None:
    fake_server.answer("POST", "/v1/learn/memory/teach", _TAUGHT)
    result = run("learn", "teach", "entry", "--limit", "1800", "--tenant", "acme")
    assert result.exit_code == 0, result.output
    assert fake_server.last.url.path == "/v1/learn/memory/teach"
    assert fake_server.last.url.params["tenant"] == "acme"
    assert fake_server.last_body() == {"suite": "entry", "limit": 1800}
    assert "Taught 1,790 examples of entry's training split" in result.stdout
    assert "2 were there already, 8 refused by the verifier (41.0 s)" in result.stdout
    assert "First refusals (5 of 8):" in result.stdout
    assert "train-0004: the shop has no such item" in result.stdout
    assert "train-0005" not in result.stdout
    as_json = run("learn", "teach", "entry", "--json")
    assert json.loads(as_json.stdout) == _TAUGHT
    assert fake_server.last_body() == {"suite": "entry"}


def test_learn_teach_spins_on_a_terminal(fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_server.answer("POST", "/v1/learn/memory/teach", _TAUGHT | {"refusals": [], "refused": 0})
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    result = run("learn", "teach", "entry")
    assert result.exit_code == 0, result.output
    assert "checking entry's training tasks" in result.stderr and "0:00:00" in result.stderr
    assert "First refusals" not in result.stdout


def test_learn_teach_an_unknown_suite_is_a_clear_error(fake_server: FakeServer) -> None:
    fake_server.answer("POST", "/v1/learn/memory/teach", _error("Unknown suite 'shop'."), status=400)
    result = run("learn", "teach", "shop")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: Unknown suite 'shop'."
    assert "Traceback" not in result.output


def _run(state: str, done: int, **extra: Any) -> dict[str, Any]:
    metrics = {
        "buy_or_book": {"passed": 3, "total": 4, "rate": 0.75, "low": 0.3006, "high": 0.9544},
        "all": {"passed": 30, "total": 43, "rate": 30 / 43, "low": 0.5484, "high": 0.8151},
    }
    return {
        "id": "evr-0a1b2c",
        "object": "eval_run",
        "suite": "entry",
        "split": "heldout",
        "model": "local",
        "experience": True,
        "state": state,
        "total": 43,
        "done": done,
        "metrics": metrics if done else {},
        "error": None,
        "started_at": 1765000000,
        "ended_at": None,
        **extra,
    }


class _Evals:
    """A server whose eval run advances one answer per look, recording every request."""

    def __init__(self, *looks: dict[str, Any]) -> None:
        self.looks = list(looks)
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST":
            return httpx.Response(202, json=_run("running", 0))
        return httpx.Response(200, json=self.looks.pop(0))


@pytest.fixture
def evals(monkeypatch: pytest.MonkeyPatch) -> Callable[..., _Evals]:
    monkeypatch.setattr(learn, "_LOOK_S", 0.0)

    def serve(*looks: dict[str, Any]) -> _Evals:
        server = _Evals(*looks)
        transport = httpx.MockTransport(server.handle)
        monkeypatch.setattr(common, "connect", functools.partial(client.connect, transport=transport))
        return server

    return serve


def test_learn_eval_starts_a_run_and_polls_it_until_done(evals: Callable[..., _Evals]) -> None:
    server = evals(_run("running", 5), _run("running", 20), _run("done", 43, ended_at=1765000100))
    result = run("learn", "eval", "entry", "--model", "local", "--limit", "43", "--tenant", "acme")
    assert result.exit_code == 0, result.output
    start, *looks = server.requests
    assert (start.method, start.url.path, start.url.params["tenant"]) == ("POST", "/v1/learn/evals", "acme")
    assert json.loads(start.content) == {
        "suite": "entry",
        "split": "heldout",
        "experience": True,
        "wait": 0,
        "model": "local",
        "limit": 43,
    }
    assert [(r.method, r.url.path) for r in looks] == [("GET", "/v1/learn/evals/evr-0a1b2c")] * 3
    assert server.looks == [], "it stops looking once the run is done"
    assert (
        "Eval evr-0a1b2c (entry, heldout split, model local, with experience) is done: 43/43" in result.stdout
    )
    metrics = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.strip()}
    assert metrics["buy_or_book"] == ["3/4", "75.0%", "30.1–95.4%"]
    assert metrics["all"] == ["30/43", "69.8%", "54.8–81.5%"]


def test_learn_eval_options_go_into_the_request(evals: Callable[..., _Evals]) -> None:
    server = evals(_run("done", 43))
    result = run("learn", "eval", "compiler", "--split", "train", "--no-experience")
    assert result.exit_code == 0, result.output
    assert json.loads(server.requests[0].content) == {
        "suite": "compiler",
        "split": "train",
        "experience": False,
        "wait": 0,
    }
    assert "tenant" not in server.requests[0].url.params


def test_learn_eval_shows_progress_on_a_terminal(
    evals: Callable[..., _Evals], monkeypatch: pytest.MonkeyPatch
) -> None:
    evals(_run("running", 20), _run("done", 43))
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    result = run("learn", "eval", "entry")
    assert result.exit_code == 0, result.output
    assert "eval evr-0a1b2c: 0/43 tasks" in result.stderr


def test_learn_eval_json_is_the_run_it_ended_with(evals: Callable[..., _Evals]) -> None:
    done = _run("done", 43, results=[])
    evals(_run("running", 9), done)
    result = run("learn", "eval", "entry", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == done


def test_learn_eval_failed_run_prints_its_error_and_exits_1(evals: Callable[..., _Evals]) -> None:
    evals(_run("running", 2), _run("failed", 2, error="model 'local' is not served"))
    result = run("learn", "eval", "entry")
    assert result.exit_code == 1
    assert "is failed: 2/43 tasks" in result.stdout
    assert "failed: model 'local' is not served" in result.stdout
    evals(_run("failed", 2, error="model 'local' is not served"))
    as_json = run("learn", "eval", "entry", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["error"] == "model 'local' is not served"


def test_learn_eval_no_wait_prints_the_run_id_and_returns(evals: Callable[..., _Evals]) -> None:
    server = evals()
    result = run("learn", "eval", "entry", "--no-wait")
    assert result.exit_code == 0, result.output
    assert [r.method for r in server.requests] == ["POST"]
    assert "Eval evr-0a1b2c is running: see it with 'aigrid learn show evr-0a1b2c'." in result.stdout
    as_json = run("learn", "eval", "entry", "--no-wait", "--json")
    assert json.loads(as_json.stdout) == _run("running", 0)


def test_learn_eval_interrupted_says_the_run_goes_on(
    evals: Callable[..., _Evals], monkeypatch: pytest.MonkeyPatch
) -> None:
    evals(_run("running", 3))

    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupted)
    result = run("learn", "eval", "entry")
    assert result.exit_code == 130
    assert "eval evr-0a1b2c goes on: see it with 'aigrid learn show evr-0a1b2c'" in result.stderr


def test_learn_eval_an_unknown_suite_is_a_clear_error(fake_server: FakeServer) -> None:
    fake_server.answer("POST", "/v1/learn/evals", _error("Unknown suite 'shop'."), status=400)
    result = run("learn", "eval", "shop")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: Unknown suite 'shop'."
    assert [r.method for r in fake_server.requests] == ["POST"]


def test_learn_evals_lists_runs(fake_server: FakeServer) -> None:
    body = {"object": "list", "data": [_run("done", 43), _run("running", 0) | {"id": "evr-ffff"}]}
    fake_server.answer("GET", "/v1/learn/evals", body)
    result = run("learn", "evals", "--suite", "entry", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert dict(fake_server.last.url.params) == {"suite": "entry", "limit": "2"}
    done = next(line for line in result.stdout.splitlines() if "evr-0a1b2c" in line)
    assert done.split()[:7] == ["evr-0a1b2c", "entry", "heldout", "local", "yes", "done", "43/43"]
    assert "buy_or_book 75.0%, all 69.8%" in done
    running = next(line for line in result.stdout.splitlines() if "evr-ffff" in line)
    assert running.split()[5:8] == ["running", "0/43", "—"]
    assert json.loads(run("learn", "evals", "--json").stdout) == body


def test_learn_show_lists_each_task(fake_server: FakeServer) -> None:
    results = [
        {
            "task": "shop-cheapest-earbuds",
            "passed": True,
            "checks": {},
            "reason": "bought it",
            "seconds": 2.34,
        },
        {"task": "book-a-table", "passed": False, "checks": {}, "reason": "no booking", "seconds": 1.0},
    ]
    body = _run("done", 43, results=results)
    fake_server.answer("GET", "/v1/learn/evals/evr-0a1b2c", body)
    result = run("learn", "show", "evr-0a1b2c")
    assert result.exit_code == 0, result.output
    assert fake_server.last.url.path == "/v1/learn/evals/evr-0a1b2c"
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.strip()}
    assert rows["shop-cheapest-earbuds"] == ["yes", "2.3", "bought", "it"]
    assert rows["book-a-table"] == ["no", "1.0", "no", "booking"]
    assert rows["buy_or_book"] == ["3/4", "75.0%", "30.1–95.4%"]
    assert json.loads(run("learn", "show", "evr-0a1b2c", "--json").stdout) == body


def test_learn_show_of_an_unknown_run(fake_server: FakeServer) -> None:
    result = run("learn", "show", "evr-nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: Not found."


def _metric(passed: int, total: int, low: float, high: float) -> dict[str, Any]:
    return {"passed": passed, "total": total, "rate": passed / total, "low": low, "high": high}


_COMPARISON = {
    "object": "eval_comparison",
    "a": _run("done", 43, experience=False),
    "b": _run("done", 43, id="evr-0b0b0b"),
    "metrics": [
        {
            "name": "buy_or_book",
            "a": _metric(3, 10, 0.108, 0.603),
            "b": _metric(15, 20, 0.531, 0.888),
            "difference": 0.45,
            "significant": True,
        },
        {
            "name": "all",
            "a": _metric(20, 43, 0.32, 0.61),
            "b": _metric(24, 43, 0.41, 0.69),
            "difference": 0.093,
            "significant": False,
        },
    ],
    "tasks": [{"task": "shop-cheapest-earbuds", "a": False, "b": True}],
}


def test_learn_compare_shows_each_metric_and_the_tasks_judged_differently(fake_server: FakeServer) -> None:
    fake_server.answer("GET", "/v1/learn/compare", _COMPARISON)
    result = run("learn", "compare", "evr-0a1b2c", "evr-0b0b0b")
    assert result.exit_code == 0, result.output
    assert dict(fake_server.last.url.params) == {"a": "evr-0a1b2c", "b": "evr-0b0b0b"}
    assert "A: evr-0a1b2c (entry, heldout split, model local, without experience)" in result.stdout
    assert "B: evr-0b0b0b (entry, heldout split, model local, with experience)" in result.stdout
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.strip()}
    assert rows["buy_or_book"] == ["30.0%", "[10.8–60.3%]", "75.0%", "[53.1–88.8%]", "+45.0", "yes"]
    assert rows["all"] == ["46.5%", "[32.0–61.0%]", "55.8%", "[41.0–69.0%]", "+9.3", "no"]
    assert rows["shop-cheapest-earbuds"] == ["failed", "passed"]
    assert json.loads(run("learn", "compare", "evr-0a1b2c", "evr-0b0b0b", "--json").stdout) == _COMPARISON


def test_learn_compare_with_no_task_judged_differently(fake_server: FakeServer) -> None:
    fake_server.answer("GET", "/v1/learn/compare", _COMPARISON | {"tasks": []})
    result = run("learn", "compare", "evr-0a1b2c", "evr-0b0b0b")
    assert result.exit_code == 0, result.output
    assert "No task both runs have was judged differently." in result.stdout
    assert "tasks judged differently" not in result.stdout


def _example(example_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": example_id,
        "object": "experience",
        "kind": "plan",
        "text": "buy the cheapest pair of wireless earbuds and pay with the wallet " * 2,
        "example": {"steps": []},
        "outcome": "success",
        "reason": None,
        "source": "suite:entry",
        "embedded": True,
        "uses": 1234,
        "created_at": 1765000000,
        "last_used_at": None,
        **extra,
    }


def test_learn_memory_list_counts_then_lists(fake_server: FakeServer) -> None:
    body = {
        "object": "list",
        "counts": {"plan": {"success": 1812, "failure": 4}, "spec": {"success": 3}},
        "data": [_example(5), _example(6, kind="spec", outcome="failure", source="feedback", uses=0)],
    }
    fake_server.answer("GET", "/v1/learn/memory", body)
    result = run("learn", "memory", "list", "--kind", "plan", "--outcome", "success", "--tenant", "acme")
    assert result.exit_code == 0, result.output
    assert dict(fake_server.last.url.params) == {
        "kind": "plan",
        "outcome": "success",
        "limit": "50",
        "tenant": "acme",
    }
    assert result.stdout.splitlines()[0] == "plan: 1,812 success, 4 failure; spec: 3 success"
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert rows["5"][:5] == ["5", "plan", "success", "suite:entry", "1,234"]
    assert rows["5"][-1].endswith("…")
    assert rows["6"][:5] == ["6", "spec", "failure", "feedback", "0"]
    assert json.loads(run("learn", "memory", "list", "--json").stdout) == body


def test_learn_memory_list_when_empty(fake_server: FakeServer) -> None:
    fake_server.answer("GET", "/v1/learn/memory", {"object": "list", "counts": {}, "data": []})
    result = run("learn", "memory", "list")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("The experience memory is empty.")


def test_learn_memory_rm_deletes_by_id(fake_server: FakeServer) -> None:
    fake_server.answer("DELETE", "/v1/learn/memory/5", {"id": 5, "object": "experience", "deleted": True})
    result = run("learn", "memory", "rm", "5", "--tenant", "acme")
    assert result.exit_code == 0, result.output
    assert fake_server.last.method == "DELETE"
    assert fake_server.last.url.path == "/v1/learn/memory/5"
    assert fake_server.last.url.params["tenant"] == "acme"
    assert "Example 5 is forgotten." in result.stdout


def test_learn_memory_rm_of_another_tenants_example(fake_server: FakeServer) -> None:
    fake_server.answer("DELETE", "/v1/learn/memory/9", _error("No experience 9."), status=404)
    result = run("learn", "memory", "rm", "9")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: No experience 9."
