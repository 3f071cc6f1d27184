"""The learning loop on a live server with the example services: traces, feedback, memory, evals.

The planner's and compiler's model is the scripted upstream, so what is checked is the loop: what
a run leaves behind, what the next run is shown, what people's feedback changes, and that every
bad request gets a clear error and one tenant never sees another's.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from tests.api.test_entry_api import EARBUDS, call, plans
from tests.examples.test_services import Service
from tests.support import ADMIN_KEY, LiveServer, RecordingUpstream

from aigrid.entry.planner import to_written

pytestmark = pytest.mark.slow

SERVER_CONFIG = '[kernel]\nplanner_model = "mock"\ncompiler_model = "mock"\nagent_model = "mock"\n'


@pytest.fixture(scope="module")
def keys(server: LiveServer) -> tuple[str, str]:
    return server.new_tenant_key("learners", users=("alice",)), server.new_tenant_key(
        "others", users=("alice",)
    )


def ask(server: LiveServer, key: str, text: str, **extra: Any) -> dict[str, Any]:
    asked = call(server, key, "POST", "/v1/entry", json={"input": text, "user": "alice", **extra})
    assert asked.status_code == 200, asked.text
    return dict(asked.json())


def listed(server: LiveServer, key: str, path: str, **params: Any) -> list[dict[str, Any]]:
    answer = call(server, key, "GET", path, params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def error(answer: httpx.Response, status: int, words: str) -> None:
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]["message"]
    assert words in message, message


def test_a_confirmed_purchase_is_traced_and_shown_to_the_next_plan_of_its_tenant_only(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service], keys: tuple[str, str]
) -> None:
    mine, theirs = keys
    plans(upstream, EARBUDS)
    first = ask(server, mine, "buy the cheapest Aurora X2 earbuds", confirm=True)
    assert first["state"] == "done", first
    (trace,) = [t for t in listed(server, mine, "/v1/traces", kind="entry") if t["subject"] == first["id"]]
    assert trace["outcome"] == "success" and trace["model"] == "mock"
    assert trace["tools"] == ["northwind.search", "lakeside.search", "northwind.create_order"]
    assert trace["messages"][-1]["content"] == "Request: buy the cheapest Aurora X2 earbuds"
    assert '"steps"' in trace["answer"], "the trace keeps what the model wrote"
    (example,) = listed(server, mine, "/v1/learn/memory", kind="plan", outcome="success")
    assert example["source"] == first["id"] and example["text"] == "buy the cheapest Aurora X2 earbuds"

    plans(upstream, {"steps": []})
    ask(server, mine, "please buy me Aurora X2 earbuds, cheapest shop")
    shown = upstream.requests[-1]["messages"]
    assert shown[1] == {"role": "user", "content": "Request: buy the cheapest Aurora X2 earbuds"}
    assert shown[2]["content"] == to_json(to_written(first["plan"])), "the verified plan is a worked example"

    plans(upstream, {"steps": []})
    ask(server, theirs, "please buy me Aurora X2 earbuds, cheapest shop")
    assert "Aurora X2 earbuds" not in upstream.requests[-1]["messages"][1]["content"], (
        "never another tenant's"
    )
    assert listed(server, theirs, "/v1/learn/memory") == []
    assert call(server, theirs, "GET", f"/v1/traces/{trace['id']}").status_code == 404


def to_json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def test_a_refused_plan_is_a_failure_with_its_reason_and_is_never_shown(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service], keys: tuple[str, str]
) -> None:
    mine, _ = keys
    wrong = {"steps": [{"id": "a", "call": "northwind.search", "args": {"q": "pan"}}]}
    plans(upstream, wrong, wrong)
    failed = ask(server, mine, "find me a frying pan somewhere")
    assert failed["state"] == "failed"
    (trace,) = [
        t for t in listed(server, mine, "/v1/traces", outcome="failure") if t["subject"] == failed["id"]
    ]
    assert "does not take: q" in trace["reason"]
    failures = listed(server, mine, "/v1/learn/memory", outcome="failure")
    assert any(f["text"] == "find me a frying pan somewhere" for f in failures)
    plans(upstream, {"steps": []})
    ask(server, mine, "find me a frying pan somewhere")
    assert all("frying pan" not in m["content"] for m in upstream.requests[-1]["messages"][1:-1])


def test_feedback_judges_what_an_entry_taught_and_corrections_are_checked(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service], keys: tuple[str, str]
) -> None:
    mine, theirs = keys
    plans(upstream, EARBUDS)
    entry = ask(server, mine, "get me aurora x2 earbuds at the lower price", confirm=True)
    assert entry["state"] == "done"
    given = call(
        server, mine, "POST", "/v1/feedback", json={"entry": entry["id"], "rating": -1, "comment": "no"}
    )
    assert given.status_code == 201, given.text
    assert given.json() | {"id": 0, "created_at": 0} == {
        "id": 0,
        "object": "feedback",
        "kind": "entry",
        "target": entry["id"],
        "rating": -1,
        "comment": "no",
        "correction": None,
        "created_at": 0,
    }
    taught = [e for e in listed(server, mine, "/v1/learn/memory") if e["source"] == entry["id"]]
    assert [e["outcome"] for e in taught] == ["failure"], "a person's 'bad' overrules the saga"
    plans(upstream, {"steps": []})
    ask(server, mine, "get me aurora x2 earbuds at the lower price")
    assert all("lower price" not in m["content"] for m in upstream.requests[-1]["messages"][1:-1])

    bad_fix = {
        "entry": entry["id"],
        "rating": 0,
        "correction": {"steps": [{"id": "a", "call": "nowhere.buy"}]},
    }
    error(call(server, mine, "POST", "/v1/feedback", json=bad_fix), 400, "not a plan that can run")
    fix = {"entry": entry["id"], "rating": 0, "correction": EARBUDS}
    assert call(server, mine, "POST", "/v1/feedback", json=fix).status_code == 201
    corrected = [
        e for e in listed(server, mine, "/v1/learn/memory") if e["source"] == f"feedback:{entry['id']}"
    ]
    assert [e["outcome"] for e in corrected] == ["success"]

    error(
        call(server, theirs, "POST", "/v1/feedback", json={"entry": entry["id"], "rating": 1}),
        404,
        "No entry",
    )
    assert all(f["target"] != entry["id"] for f in listed(server, theirs, "/v1/feedback"))
    assert [f["target"] for f in listed(server, mine, "/v1/feedback", kind="entry")][:2] == [entry["id"]] * 2


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"rating": 1}, "exactly one of"),
        ({"entry": "ent-1", "process": "p-1", "rating": 1}, "exactly one of"),
        ({"entry": "ent-1", "rating": 2}, "rating must be"),
        ({"entry": "ent-1", "rating": True}, "rating must be"),
        ({"entry": "ent-1"}, "rating must be"),
        ({"entry": "", "rating": 1}, "1 to 96 characters"),
        ({"entry": "ent-1", "rating": 1, "version": 2}, "goes only with 'agent'"),
        ({"agent": "x", "rating": 1, "version": 99999999999}, "between 1 and"),
        ({"entry": "ent-1", "rating": 1, "comment": "x" * 4001}, "at most 4000"),
        ({"entry": "ent-1", "rating": 1, "comment": 7}, "must be text"),
        ({"completion": "chatcmpl-1", "rating": 1}, "X-Request-Id"),
    ],
)
def test_bad_feedback_gets_a_clear_400(
    server: LiveServer, keys: tuple[str, str], body: dict[str, Any], words: str
) -> None:
    error(call(server, keys[0], "POST", "/v1/feedback", json=body), 400, words)


def test_feedback_reaches_only_the_tenants_own_completions_processes_and_agents(
    server: LiveServer, upstream: RecordingUpstream, keys: tuple[str, str]
) -> None:
    mine, theirs = keys
    chat = call(
        server,
        mine,
        "POST",
        "/v1/chat/completions",
        json={"model": "mock", "messages": [{"role": "user", "content": "hi"}]},
    )
    request_id = chat.headers["x-request-id"]
    assert (
        call(server, mine, "POST", "/v1/feedback", json={"completion": request_id, "rating": 1}).status_code
        == 201
    )
    error(
        call(server, theirs, "POST", "/v1/feedback", json={"completion": request_id, "rating": 1}),
        404,
        "No completion",
    )
    error(call(server, mine, "POST", "/v1/feedback", json={"process": "p-nothere", "rating": 1}), 404, "")
    spec = {"name": "helper", "instructions": "Say hi.", "model": "mock"}
    assert call(server, mine, "POST", "/v1/agents", json=spec).status_code == 201
    given = call(server, mine, "POST", "/v1/feedback", json={"agent": "helper", "rating": 1})
    assert given.status_code == 201 and given.json()["target"] == "helper@1", "the newest version by default"
    error(call(server, theirs, "POST", "/v1/feedback", json={"agent": "helper", "rating": 1}), 404, "")
    error(call(server, mine, "POST", "/v1/feedback", content=b"{nope"), 400, "not valid JSON")

    upstream.script[:] = [{"role": "assistant", "content": "hello"}]
    started = call(server, mine, "POST", "/v1/processes", json={"agent": "helper", "input": "greet"})
    pid = started.json()["id"] if "id" in started.json() else started.json()["pid"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not [
        t for t in listed(server, mine, "/v1/traces", kind="process") if t["subject"] == pid
    ]:
        time.sleep(0.2)
    (trace,) = [t for t in listed(server, mine, "/v1/traces", kind="process") if t["subject"] == pid]
    assert trace["outcome"] == "success" and trace["answer"] == "hello" and trace["input"] == "greet"
    assert call(server, mine, "POST", "/v1/feedback", json={"process": pid, "rating": -1}).status_code == 201
    error(call(server, theirs, "POST", "/v1/feedback", json={"process": pid, "rating": -1}), 404, "")


def test_teaching_keeps_verified_training_examples_that_can_be_listed_and_forgotten(
    server: LiveServer, services: dict[str, Service], keys: tuple[str, str]
) -> None:
    mine, theirs = keys
    taught = call(server, mine, "POST", "/v1/learn/memory/teach", json={"suite": "entry", "limit": 12})
    assert taught.status_code == 200, taught.text
    result = taught.json()
    assert result["taught"] + result["refused"] == 12 and result["taught"] >= 8, result
    again = call(server, mine, "POST", "/v1/learn/memory/teach", json={"suite": "entry", "limit": 12}).json()
    assert again["taught"] == 0 and again["already"] == result["taught"], "an example is kept once"
    examples = [
        e for e in listed(server, mine, "/v1/learn/memory", limit=500) if e["source"] == "suite:entry"
    ]
    assert len(examples) == result["taught"]
    counts = call(server, mine, "GET", "/v1/learn/memory").json()["counts"]
    assert counts["plan"]["success"] >= len(examples)
    victim = examples[0]["id"]
    assert call(server, theirs, "DELETE", f"/v1/learn/memory/{victim}").status_code == 404
    gone = call(server, mine, "DELETE", f"/v1/learn/memory/{victim}")
    assert gone.json() == {"id": victim, "object": "experience", "deleted": True}
    assert call(server, mine, "DELETE", f"/v1/learn/memory/{victim}").status_code == 404
    error(call(server, mine, "DELETE", "/v1/learn/memory/abc"), 400, "whole number")
    error(call(server, mine, "POST", "/v1/learn/memory/teach", json={"suite": "poems"}), 400, "Unknown suite")
    error(
        call(server, mine, "POST", "/v1/learn/memory/teach", json={"suite": "entry", "limit": 0}),
        400,
        "limit",
    )
    error(call(server, mine, "GET", "/v1/learn/memory", params={"kind": "poem"}), 400, "'kind' must be")
    compiled = call(
        server, mine, "POST", "/v1/learn/memory/teach", json={"suite": "compiler", "limit": 10}
    ).json()
    assert compiled["taught"] + compiled["refused"] == 10 and compiled["taught"] >= 5, compiled


def test_an_eval_run_is_stored_with_intervals_and_runs_compare_side_by_side(
    server: LiveServer, upstream: RecordingUpstream, keys: tuple[str, str]
) -> None:
    mine, theirs = keys
    upstream.script[:] = []
    started = call(
        server, mine, "POST", "/v1/learn/evals", json={"suite": "compiler", "limit": 3, "wait": 60}
    )
    assert started.status_code == 200, started.text
    run = started.json()
    assert (run["state"], run["total"], run["done"], run["split"]) == ("done", 3, 3, "heldout")
    assert set(run["metrics"]) == {"right_tools", "right_trigger", "valid", "all"}
    for metric in run["metrics"].values():
        assert 0 <= metric["low"] <= (metric["rate"] or 0) <= metric["high"] <= 1
    read = call(server, mine, "GET", f"/v1/learn/evals/{run['id']}").json()
    assert len(read["results"]) == 3 and all(r["reason"] for r in read["results"])
    assert call(server, theirs, "GET", f"/v1/learn/evals/{run['id']}").status_code == 404
    assert next(r["id"] for r in listed(server, mine, "/v1/learn/evals", suite="compiler")) == run["id"]
    assert listed(server, theirs, "/v1/learn/evals") == []
    off = call(
        server,
        mine,
        "POST",
        "/v1/learn/evals",
        json={"suite": "compiler", "limit": 3, "experience": False, "wait": 60},
    ).json()
    compared = call(server, mine, "GET", "/v1/learn/compare", params={"a": off["id"], "b": run["id"]}).json()
    assert [m["name"] for m in compared["metrics"]] == ["right_tools", "right_trigger", "valid", "all"]
    assert compared["a"]["experience"] is False and compared["b"]["experience"] is True
    tools = call(
        server, mine, "POST", "/v1/learn/evals", json={"suite": "tools", "limit": 2, "wait": 60}
    ).json()
    assert tools["state"] == "done" and tools["done"] == 2
    reasons = [
        r["reason"] for r in call(server, mine, "GET", f"/v1/learn/evals/{tools['id']}").json()["results"]
    ]
    assert all(r.startswith("no tool call; want") for r in reasons), "the scripted model called no tool"
    asked = upstream.requests[-1]
    assert asked["tool_choice"] == "required" and all(
        "." not in t["function"]["name"] for t in asked["tools"]
    )
    suites = {s["name"]: s for s in listed(server, mine, "/v1/learn/suites")}
    assert (
        suites["entry"]["splits"]["heldout"]["tasks"] == 43
        and suites["entry"]["splits"]["train"]["tasks"] > 500
    )
    assert "hand-written" in suites["compiler"]["splits"]["heldout"]["made"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "'suite' must name a suite"),
        ({"suite": "poems"}, "Unknown suite 'poems'"),
        ({"suite": "entry", "split": "test"}, "Unknown split"),
        ({"suite": "entry", "limit": 0}, "'limit' must be"),
        ({"suite": "entry", "model": "no-such-model"}, "No model named"),
        ({"suite": "entry", "experience": "yes"}, "'experience' must be"),
        ({"suite": "entry", "wait": -1}, "'wait' must be"),
        ({"suite": "entry", "tenant": "learners"}, "only reach its own"),
    ],
)
def test_a_bad_eval_request_gets_a_clear_error(
    server: LiveServer, keys: tuple[str, str], body: dict[str, Any], words: str
) -> None:
    answer = call(server, keys[1], "POST", "/v1/learn/evals", json=body)
    assert answer.status_code in (400, 403), answer.text
    assert words in answer.json()["error"]["message"]


def test_bad_reads_get_clear_errors(server: LiveServer, keys: tuple[str, str]) -> None:
    mine, _ = keys
    error(call(server, mine, "GET", "/v1/traces", params={"kind": "dream"}), 400, "'kind' must be")
    error(call(server, mine, "GET", "/v1/traces/abc"), 400, "whole number")
    error(call(server, mine, "GET", "/v1/traces/99999999999999999999999"), 400, "whole number")
    error(call(server, mine, "GET", "/v1/traces/987654"), 404, "No trace")
    error(call(server, mine, "GET", "/v1/learn/evals/evr-nothere"), 404, "No eval run")
    error(call(server, mine, "GET", "/v1/learn/compare", params={"a": "evr-1"}), 400, "?a=RUN&b=RUN")
    error(call(server, mine, "GET", "/v1/learn/evals", params={"suite": "poems"}), 400, "'suite' must be")
    assert call(server, ADMIN_KEY, "GET", "/v1/learn/memory", params={"tenant": "nobody"}).status_code == 404


def test_a_dataset_holds_verified_plans_and_corrections_and_a_round_needs_an_embedded_model(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service], keys: tuple[str, str]
) -> None:
    mine, _ = keys
    body = {"kind": "planner", "tenant": "learners"}
    error(call(server, mine, "POST", "/v1/learn/datasets", json=body), 403, "admin key")
    built = call(server, ADMIN_KEY, "POST", "/v1/learn/datasets", json=body)
    assert built.status_code == 201, built.text
    dataset = built.json()
    assert dataset["sources"]["trace"] >= 1 and dataset["sources"]["correction"] == 1, dataset
    assert dataset["left_out"]["not_verified"] >= 1, "refused plans and declined entries teach nothing"
    shown = call(server, ADMIN_KEY, "GET", f"/v1/learn/datasets/{dataset['id']}", params={"examples": 20})
    examples = shown.json()["preview"]
    assert len(examples) == dataset["examples"]
    answers = [e["messages"][-1] for e in examples]
    assert all(a["role"] == "assistant" for a in answers)
    assert {"role": "assistant", "content": to_json(to_written(EARBUDS))} in answers, "the correction"
    assert all(e["messages"][-2]["content"].startswith("Request: ") for e in examples)

    plans(upstream, EARBUDS)
    started = call(server, ADMIN_KEY, "POST", "/v1/learn/rounds", json={"tasks": 2, "k": 1, "wait": 300})
    assert started.status_code == 200, started.text
    finished = started.json()
    assert finished["state"] == "failed" and "No embedded model" in finished["error"], finished
    assert finished["pass_rate"]["student"]["tried"] == 2, "each task's answer was judged"
    assert finished["dataset"] is not None and finished["model"] is None
