"""The console's Learning page and its feedback buttons, in Debian's Chromium against a live server.

Screenshots go to the same folder as the other console tests' (named at the end of the run).
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect
from tests.api.test_tools_api import api
from tests.support import ADMIN_KEY, LiveServer, RecordingUpstream
from tests.web.test_console import KEEPER, browser, page, shoot, sign_in, start_keeper

pytestmark = pytest.mark.slow

__all__ = ["browser", "page"]  # the fixtures, shared with the other console tests

SERVER_CONFIG = '[kernel]\ncompiler_model = "mock"\nagent_model = "mock"\n'


def test_the_learning_page_lists_the_suites_and_runs_an_eval_to_its_results(
    page: Page, server: LiveServer
) -> None:
    key = server.new_tenant_key("wayne")
    suites = {s["name"]: s for s in api(server, key, "GET", "/v1/learn/suites").json()["data"]}
    sign_in(page, server, key, "#/learning")
    table = page.get_by_test_id("suites")
    for name, suite in suites.items():
        row = table.locator(f"tr[data-suite='{name}']")
        expect(row).to_contain_text(", ".join(suite["metrics"]))
        expect(row.locator("td").nth(2)).to_have_text(f"{suite['splits']['train']['tasks']:,}")
        expect(row.locator("td").nth(4)).to_have_text(f"{suite['splits']['heldout']['tasks']:,}")
    expect(page.get_by_test_id("eval-runs")).to_contain_text("No runs yet.")
    shoot(page, "20-learning")

    # The cheapest run: two held-out tasks of the compiler suite, without the memory.
    page.get_by_test_id("eval-suite").select_option("compiler")
    page.get_by_test_id("eval-limit").fill("2")
    page.get_by_test_id("eval-experience").uncheck()
    page.get_by_test_id("eval-start").click()
    expect(page.get_by_test_id("eval-notice")).to_contain_text("Started evr-")
    runs = api(server, key, "GET", "/v1/learn/evals").json()["data"]
    assert len(runs) == 1, runs
    run_id = runs[0]["id"]
    assert (runs[0]["suite"], runs[0]["split"], runs[0]["experience"]) == ("compiler", "heldout", False)
    expect(page).to_have_url(f"{server.url}/#/learning/{run_id}")
    row = page.locator(f"tr[data-run='{run_id}']")
    expect(row).to_contain_text("compiler")
    expect(row.locator("td").nth(4)).to_have_text("off")
    opened = page.get_by_test_id("eval-run")
    expect(opened).to_contain_text(run_id)
    expect(page.get_by_test_id("eval-run-state")).to_have_text("done", timeout=90_000)

    # The results are the API's: every task with its verdict, every metric with its interval.
    run: dict[str, Any] = api(server, key, "GET", f"/v1/learn/evals/{run_id}").json()
    assert run["state"] == "done" and run["total"] == 2, run
    expect(row.locator("td").nth(6)).to_contain_text("2/2")
    results = page.get_by_test_id("eval-results").locator("tbody tr")
    expect(results).to_have_count(len(run["results"]))
    for result in run["results"]:
        verdict = "✓ yes" if result["passed"] else "✗ no"
        expect(page.locator(f"tr[data-task='{result['task']}'] td").nth(1)).to_have_text(verdict)
    metrics = page.get_by_test_id("eval-metrics")
    for name, metric in run["metrics"].items():
        line = metrics.locator("tr", has=page.locator(f"td:text-is('{name}')"))
        expect(line.locator("td").nth(1)).to_have_text(str(metric["passed"]))
        expect(line.locator("td").nth(3)).to_have_text(f"{round(metric['rate'] * 100)}%")
    main = "all" if "all" in run["metrics"] else next(iter(run["metrics"]))
    expect(row.locator("td").nth(7)).to_contain_text(f"{main}: {round(run['metrics'][main]['rate'] * 100)}%")
    expect(page.locator("canvas[data-suite='compiler']")).to_be_visible()  # its pass rate over time
    shoot(page, "21-learning-eval-run")

    # The run closes; a model the grid lacks is refused with the API's words, and nothing starts.
    opened.get_by_role("link", name="close").click()
    expect(opened).to_be_hidden()
    page.get_by_test_id("eval-model").fill("no-such-model")
    page.get_by_test_id("eval-start").click()
    expect(page.get_by_test_id("eval-error")).to_have_text("No model named 'no-such-model' on this grid.")
    assert len(api(server, key, "GET", "/v1/learn/evals").json()["data"]) == 1


def test_an_example_is_forgotten_from_the_experience_memory(page: Page, server: LiveServer) -> None:
    key = server.new_tenant_key("stark")
    # An agent saved with the description it was made from is an example the next compiles learn from.
    spec = {**KEEPER, "name": "diary", "description": "Keep a diary of what I tell you."}
    saved = api(server, key, "POST", "/v1/agents", json=spec)
    assert saved.status_code == 201, saved.text
    memory = api(server, key, "GET", "/v1/learn/memory").json()
    assert memory["data"], "saving the agent kept no example"
    sign_in(page, server, key, "#/learning")
    counts = page.get_by_test_id("memory-counts")
    rows = page.get_by_test_id("memory").locator("tbody tr[data-example]")
    expect(rows).to_have_count(len(memory["data"]))
    for kind, outcomes in memory["counts"].items():
        for outcome, n in outcomes.items():
            expect(counts).to_contain_text(f"{n:,} {outcome}")
        expect(counts).to_contain_text(f"{kind}:")
    shoot(page, "22-learning-memory")

    example = memory["data"][0]
    row = page.locator(f"tr[data-example='{example['id']}']")
    expect(row).to_contain_text(example["source"])
    row.get_by_test_id("forget").click()
    expect(page.get_by_test_id("memory-notice")).to_contain_text(f"Forgot example #{example['id']}")
    expect(row).to_be_hidden()
    left = api(server, key, "GET", "/v1/learn/memory").json()["data"]
    assert example["id"] not in [e["id"] for e in left]
    expect(rows).to_have_count(len(left))


def test_feedback_on_a_process_an_agent_version_and_an_entry_shows_on_the_learning_page(
    page: Page, server: LiveServer, upstream: RecordingUpstream
) -> None:
    key = server.new_tenant_key("oscorp")
    pid = start_keeper(server, upstream, key)
    sign_in(page, server, key, f"#/processes/{pid}")
    given = page.get_by_test_id("process-feedback")
    given.get_by_test_id("feedback-comment").fill("it wrote down the wrong day")
    given.get_by_test_id("feedback-bad").click()
    expect(given.get_by_test_id("feedback-notice")).to_have_text(f"Recorded bad on process {pid}.")
    expect(given.get_by_test_id("feedback-comment")).to_have_value("")
    shoot(page, "23-process-feedback")
    kept = api(server, key, "GET", "/v1/feedback").json()["data"]
    assert [(f["kind"], f["target"], f["rating"], f["comment"]) for f in kept] == [
        ("process", pid, -1, "it wrote down the wrong day")
    ]

    # An agent's version is rated from the agent's page.
    page.goto(f"{server.url}/#/agents/note-keeper")
    on_agent = page.get_by_test_id("agent-feedback")
    expect(on_agent).to_contain_text("v1")
    on_agent.get_by_test_id("feedback-good").click()
    expect(on_agent.get_by_test_id("feedback-notice")).to_contain_text("Recorded good on agent note-keeper")
    agent_feedback = api(server, key, "GET", "/v1/feedback", params={"kind": "agent"}).json()["data"]
    assert len(agent_feedback) == 1 and agent_feedback[0]["rating"] == 1

    # An answer of the super entry is rated on the Learning page, under its recent entries.
    entry = api(server, key, "POST", "/v1/entry", json={"input": "what is on sale", "wait": 30}).json()
    page.get_by_role("link", name="Learning").click()
    on_entry = page.locator(f"[data-entry='{entry['id']}']")
    expect(on_entry).to_contain_text("what is on sale")
    on_entry.get_by_test_id("feedback-bad").click()
    expect(on_entry.get_by_test_id("feedback-notice")).to_have_text(f"Recorded bad on entry {entry['id']}.")

    # All three are in the feedback received, newest first, the process's linking back to it.
    rows = page.get_by_test_id("feedback-list").locator("tbody tr[data-feedback]")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text(entry["id"])
    expect(rows.nth(1)).to_contain_text("agent")
    expect(rows.nth(1).locator("td").nth(3)).to_have_text("good")
    expect(rows.nth(2).locator("td").nth(3)).to_have_text("bad")
    expect(rows.nth(2)).to_contain_text("it wrote down the wrong day")
    shoot(page, "24-learning-feedback")
    rows.nth(2).get_by_role("link", name=pid).click()
    expect(page.get_by_test_id("process-state")).to_be_visible()

    # Another tenant sees none of it.
    page.get_by_test_id("signout").click()
    sign_in(page, server, server.new_tenant_key("lexcorp"), "#/learning")
    expect(page.get_by_test_id("feedback-list")).to_contain_text("No feedback yet.")

    # The admin rates the process for the tenant that owns it.
    page.get_by_test_id("signout").click()
    sign_in(page, server, ADMIN_KEY, f"#/processes/{pid}")
    page.get_by_test_id("process-feedback").get_by_test_id("feedback-good").click()
    expect(page.get_by_test_id("process-feedback").get_by_test_id("feedback-notice")).to_have_text(
        f"Recorded good on process {pid}."
    )
    ratings = [
        f["rating"]
        for f in api(server, key, "GET", "/v1/feedback", params={"kind": "process"}).json()["data"]
    ]
    assert ratings == [1, -1]


NAME = "smollm2-135m@planner-1"
GATE = {
    "promoted": True,
    "reason": "candidate 31/43 beats 22/43 in use, beyond the noise (95% intervals apart)",
    "metrics": {
        "all": {"incumbent": [22, 43], "candidate": [31, 43]},
        "must_buy_nothing": {"incumbent": [10, 10], "candidate": [10, 10]},
    },
    "incumbent": "local",
    "candidate": NAME,
    "runs": ["evr-0old00", "evr-0new00"],
}


def _learned(state: str, gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """A learned version as GET /v1/learn/models shows it, trained on ``dataset``."""
    figures = {
        "student": {"passed": 48, "tried": 120, "rate": 0.4},
        "teacher": {"passed": 27, "tried": 30, "rate": 0.9},
    }
    lineage: dict[str, Any] = {
        "base": "smollm2-135m",
        "dataset": "ds-0a1b2c3d4e5f",
        "job": {"rank": 16, "max_steps": 120},
        "rounds": [{"round": 1, "tasks": 30, "solved": 28, "pass_rate": figures, "seconds": 95.0}],
        "training": {"step": 120, "steps": 120, "loss": 0.4123, "eta_s": 0, "seconds": 340.2, "events": []},
    }
    if gate is not None:
        lineage["gate"] = gate
    return {
        "id": NAME,
        "object": "learned_model",
        "kind": "planner",
        "base": "smollm2-135m",
        "dataset": "ds-0a1b2c3d4e5f",
        "state": state,
        "adapter": "/data/learned/adapter.gguf",
        "lineage": lineage,
        "error": None,
        "created_at": 1765000000,
        "updated_at": 1765000340,
        "served": True,
    }


def _training() -> dict[str, Any]:
    shown = _learned("training") | {"id": "smollm2-135m@compiler-1", "kind": "compiler", "served": False}
    shown["lineage"] = shown["lineage"] | {
        "training": {"step": 30, "steps": 120, "loss": 1.5, "eta_s": 225.0}
    }
    return shown


def test_the_admin_runs_the_gate_on_a_learned_model_and_rolls_it_back(page: Page, server: LiveServer) -> None:
    # A dataset the server builds for real (of no examples on this server: no verified planner traces).
    built = api(server, ADMIN_KEY, "POST", "/v1/learn/datasets", json={"kind": "planner"})
    assert built.status_code == 201, built.text
    dataset = built.json()
    # Training needs the embedded model's weights: the versions and the gate are the API's answers, faked.
    listing: dict[str, Any] = {
        "object": "list",
        "data": [_training(), _learned("candidate")],
        "in_use": {"planner": "local", "compiler": "mock", "agents": "mock"},
        "history": [],
    }
    gates: list[Route] = []
    posted: list[tuple[str, Any]] = []

    def models(route: Route) -> None:
        route.fulfill(json=listing)

    def promote(route: Route) -> None:
        posted.append((route.request.url, route.request.post_data_json))
        gates.append(route)  # answered below, as the gate answers once its evals have run

    def rollback(route: Route) -> None:
        posted.append((route.request.url, route.request.post_data_json))
        listing["in_use"]["planner"] = "local"
        route.fulfill(json={"object": "rollback", "kind": "planner", "from": NAME, "to": "local"})

    page.route("**/v1/learn/models", models)
    page.route("**/v1/learn/models/*/promote", promote)
    page.route("**/v1/learn/rollback", rollback)
    sign_in(page, server, ADMIN_KEY, "#/learning")

    section = page.get_by_test_id("learned")
    in_use = section.get_by_test_id("in-use")
    expect(in_use.locator("li[data-kind='planner']")).to_have_text(
        "planner uses local (configured)", use_inner_text=True
    )
    expect(in_use.locator("li[data-kind='compiler']")).to_contain_text("compiler uses mock")
    expect(in_use.get_by_test_id("rollback")).to_have_count(3)
    expect(in_use.get_by_test_id("rollback").first).to_be_hidden()  # nothing learned is in use
    candidate = section.locator(f"tr[data-model='{NAME}']")
    cells = candidate.locator("td")
    expect(cells.nth(1)).to_have_text("planner")
    expect(cells.nth(2)).to_have_text("candidate")
    expect(cells.nth(3)).to_have_text("120/120 steps · loss 0.412 · in 5m 40s")
    expect(cells.nth(4)).to_have_text("ds-0a1b2c3d4e5f")
    expect(cells.nth(5)).to_have_text("student 40% · teacher 90%")
    expect(cells.nth(6)).to_have_text("—")
    expect(cells.nth(7)).to_have_text("yes")
    training = section.locator("tr[data-model='smollm2-135m@compiler-1']")
    expect(training.locator("td").nth(3)).to_contain_text("30/120 steps · loss 1.500 · 3m 45s left")
    expect(training.locator("progress")).to_be_visible()
    expect(training.get_by_test_id("run-gate")).to_be_hidden()  # only a candidate goes through the gate
    row = section.get_by_test_id("datasets").locator(f"tr[data-dataset='{dataset['id']}']")
    expect(row.locator("td").nth(1)).to_have_text("planner")
    expect(row.locator("td").nth(2)).to_have_text("0")
    shoot(page, "26-learning-learned-models")

    # The dataset's file comes with the admin's key: a plain link would be refused.
    with page.expect_download() as download:
        row.get_by_test_id("export").click()
    assert download.value.suggested_filename == f"{dataset['id']}.jsonl"
    assert download.value.failure() is None

    # The gate takes minutes: the page says so, and shows the decision once the call answers.
    candidate.get_by_test_id("run-gate").click()
    notice = section.get_by_test_id("learned-notice")
    expect(notice).to_have_text(f"Running the held-out evals of {NAME} and of local: this takes minutes.")
    expect(candidate.get_by_test_id("run-gate")).to_be_disabled()
    assert [url for url, _ in posted] == [f"{server.url}/v1/learn/models/smollm2-135m%40planner-1/promote"]
    assert posted[0][1] == {}
    listing["data"] = [_training(), _learned("promoted", GATE)]
    listing["in_use"]["planner"] = NAME
    listing["history"] = [
        {"kind": "planner", "model": NAME, "action": "promote", "reason": "won", "at": 1765000400}
    ]
    gates[0].fulfill(json={"object": "promotion", **GATE})
    decision = section.get_by_test_id("gate-decision")
    expect(decision).to_contain_text(f"Promoted: {NAME} is in use now, in place of local.")
    expect(decision).to_contain_text(f"reason: {GATE['reason']}")
    metrics = decision.get_by_test_id("gate-metrics")
    expect(metrics.locator("th").nth(1)).to_have_text("in use: local")
    expect(metrics.locator("th").nth(2)).to_have_text(f"candidate: {NAME}")
    expect(metrics.locator("tr[data-metric='all'] td")).to_have_text(["all", "22/43 (51%)", "31/43 (72%)"])
    expect(decision.get_by_role("link", name="evr-0new00")).to_have_attribute("href", "#/learning/evr-0new00")
    expect(notice).to_be_hidden()
    expect(cells.nth(2)).to_have_text("promoted")
    expect(cells.nth(6)).to_have_text("promoted: 31/43 vs 22/43 in use")
    expect(in_use.locator("li[data-kind='planner']")).to_contain_text(f"planner uses {NAME} (learned)")
    shoot(page, "27-learning-gate-decision")

    # The learned model in use is rolled back.
    in_use.locator("li[data-kind='planner']").get_by_test_id("rollback").click()
    expect(notice).to_have_text(f"planner: rolled back from {NAME} to local, in use now.")
    assert posted[-1] == (f"{server.url}/v1/learn/rollback", {"kind": "planner"})
    expect(in_use.locator("li[data-kind='planner']")).to_have_text(
        "planner uses local (configured)", use_inner_text=True
    )


def test_a_tenant_sees_no_learned_models(page: Page, server: LiveServer) -> None:
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    sign_in(page, server, server.new_tenant_key("wonka"), "#/learning")
    expect(page.get_by_test_id("memory-counts")).to_be_visible()
    expect(page.get_by_test_id("learned")).to_be_hidden()
    assert not [url for url in asked if "/v1/learn/models" in url or "/v1/learn/datasets" in url], asked
    expect(page.get_by_test_id("learning-error")).to_be_hidden()


def test_the_learning_page_fits_a_phone_screen(browser: Browser, server: LiveServer) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone = context.new_page()
    try:
        sign_in(phone, server, ADMIN_KEY, "#/learning")
        expect(phone.get_by_test_id("page-learning")).to_be_visible()
        expect(phone.get_by_test_id("suites")).to_contain_text("compiler")
        runs = api(server, ADMIN_KEY, "GET", "/v1/learn/evals").json()["data"]
        if runs:  # the admin sees every tenant's runs; open the first
            phone.goto(f"{server.url}/#/learning/{runs[0]['id']}")
            expect(phone.get_by_test_id("eval-run")).to_contain_text(runs[0]["id"])
        phone.wait_for_timeout(300)
        wide: Any = phone.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, f"the learning page scrolls sideways on a phone ({wide}px)"
        shoot(phone, "25-phone-learning")
    finally:
        context.close()
