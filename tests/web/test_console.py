"""The console in a real browser: Debian's Chromium, headless, driven by Playwright against a live server.

Each test leaves screenshots of the pages it saw in the folder the test run names at its end.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from tests.api.test_compose_api import WATCHER, model_writes
from tests.api.test_tools_api import api, tool_call, wait_state
from tests.support import ADMIN_KEY, SCREENSHOTS, LiveServer, RecordingUpstream, aigrid

from aigrid.cli.render import cny, count

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("AIGRID_CHROMIUM", "/usr/bin/chromium"))
STDIO_SERVER = Path(__file__).resolve().parents[1] / "kernel" / "mcp_stdio_server.py"
SERVER_CONFIG = '[kernel]\ncompiler_model = "mock"\nagent_model = "mock"\n'
# Without the networking flags, Chromium reaches for Google's hosts on a closed network at start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEEPER = {
    "name": "note-keeper",
    "instructions": "Write down what you are told.",
    "model": "mock",
    "tools": ["memory.write"],
    "approval": ["memory.write"],
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; `make test` installs it, and requires it with AIGRID_REQUIRE_BROWSER."""
    if not CHROMIUM.exists():
        if os.environ.get("AIGRID_REQUIRE_BROWSER"):
            pytest.fail(f"No browser at {CHROMIUM}: `make test` installs Debian's chromium package.")
        pytest.skip(f"no browser at {CHROMIUM} (`make test` installs Debian's chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no stored key) with a laptop-sized window; console errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    tab.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    yield tab
    context.close()
    # A 4xx the page shows on purpose is logged by the browser as a failed resource, not a script error.
    scripts = [p for p in problems if "Failed to load resource" not in p]
    assert not scripts, f"the page's scripts failed: {scripts}"


def shoot(page: Page, name: str) -> None:
    """Save a full-page screenshot for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, server: LiveServer, key: str, where: str = "#/meter") -> None:
    """Open the console and sign in with ``key``."""
    page.goto(f"{server.url}/{where}")
    page.get_by_test_id("signin-key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("whoami")).to_be_visible()


def chat(server: LiveServer, key: str, times: int) -> None:
    """Spend some tokens as the owner of ``key``."""
    client = server.openai(key)
    for _ in range(times):
        client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hello"}])


def test_signing_in_with_a_bad_key_says_so_and_a_good_one_opens_the_console(
    page: Page, server: LiveServer
) -> None:
    tenant_key = server.new_tenant_key("initech")
    page.goto(server.url + "/")
    expect(page.get_by_test_id("signin")).to_be_visible()
    shoot(page, "01-sign-in")
    page.get_by_test_id("signin-key").fill("sk-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("signin-error")).to_have_text("That key is not valid here.")

    page.get_by_test_id("signin-key").fill(tenant_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("whoami")).to_have_text("tenant initech")
    expect(page.get_by_role("link", name="Grid")).to_be_hidden()  # deployments are the admin's
    page.goto(server.url + "/#/grid")  # typed in by hand: the API's refusal, in words
    expect(page.get_by_test_id("page-grid")).to_contain_text("This endpoint needs the admin key.")
    page.goto(server.url + "/#/nowhere")
    expect(page.get_by_role("heading", name="No such page")).to_be_visible()

    page.reload()  # the key is remembered in this browser until the user signs out
    expect(page.get_by_test_id("whoami")).to_have_text("tenant initech")
    page.get_by_test_id("signout").click()
    expect(page.get_by_test_id("signin")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("signin")).to_be_visible()

    # A key revoked while signed in sends the user back to the sign-in form, saying why.
    sign_in(page, server, tenant_key)
    keys = server.admin("GET", "/admin/keys", params={"tenant": "initech"}).json()["data"]
    assert server.admin("DELETE", f"/admin/keys/{keys[0]['id']}").status_code == 200
    page.goto(server.url + "/#/processes")
    expect(page.get_by_test_id("signin-error")).to_be_visible()


def test_the_meter_shows_the_same_numbers_as_the_api_and_aigrid_usage(page: Page, server: LiveServer) -> None:
    acme, globex = server.new_tenant_key("acme"), server.new_tenant_key("globex")
    chat(server, acme, 3)
    chat(server, globex, 2)
    budget = {"tenant": "acme", "period": "month", "cost": "0.001"}
    assert server.admin("PUT", "/admin/budgets", json=budget).status_code == 200

    sign_in(page, server, ADMIN_KEY)
    for window in ("hour", "day", "month"):
        page.get_by_test_id(f"range-{window}").click()
        expect(page.get_by_test_id("meter-requests")).not_to_have_text("—")
        since = page.get_by_test_id("meter-since").inner_text()
        usage = server.admin("GET", "/v1/usage", params={"group_by": "tenant", "since": since}).json()
        totals = usage["totals"]
        expect(page.get_by_test_id("meter-requests")).to_have_text(count(totals["requests"]))
        expect(page.get_by_test_id("meter-prompt")).to_have_text(count(totals["prompt_tokens"]))
        expect(page.get_by_test_id("meter-completion")).to_have_text(count(totals["completion_tokens"]))
        expect(page.get_by_test_id("meter-total-tokens")).to_have_text(count(totals["total_tokens"]))
        expect(page.get_by_test_id("meter-cost")).to_have_text(cny(totals["cost_micro"]))
        assert totals["requests"] >= 5
        shoot(page, f"02-meter-{window}")

    # The command the page names prints the same totals in its footer.
    command = page.get_by_test_id("meter-command").inner_text().split()
    assert command[:2] == ["aigrid", "usage"]
    printed = aigrid(server, *command[1:])
    assert printed.returncode == 0, printed.stderr
    footer = next(line for line in printed.stdout.splitlines() if line.strip().startswith("total"))
    _, requests, prompt, completion, _cached, total, cost = footer.split()
    shown = ("meter-requests", "meter-prompt", "meter-completion", "meter-total-tokens", "meter-cost")
    assert [requests, prompt, completion, total, cost] == [page.get_by_test_id(n).inner_text() for n in shown]

    # Top consumers are the API's groups, biggest bill first; the budget shows what acme spent.
    rows = page.get_by_test_id("top-consumers").locator("tbody tr")
    by_tenant = {r["tenant"]: r for r in usage["data"]}
    expect(rows.first.locator("td").first).to_have_text("acme")
    expect(rows.nth(0).locator("td").nth(3)).to_have_text(cny(by_tenant["acme"]["cost_micro"]))
    expect(rows.nth(1).locator("td").nth(3)).to_have_text(cny(by_tenant["globex"]["cost_micro"]))
    spent = server.admin("GET", "/admin/budgets", params={"tenant": "acme"}).json()["data"][0]
    expect(page.get_by_test_id("budget").first).to_contain_text(f"{cny(spent['spent'])} of 0.001")

    page.get_by_test_id("split").select_option("model")
    expect(page.get_by_test_id("meter-command")).to_contain_text("--group-by model")
    page.get_by_test_id("metric").select_option("cost")
    shoot(page, "03-meter-by-model-cost")

    # A tenant sees its own bill only.
    page.get_by_test_id("signout").click()
    sign_in(page, server, globex)
    expect(page.get_by_test_id("meter-requests")).to_have_text("2")
    mine = api(server, globex, "GET", "/v1/usage").json()["totals"]
    expect(page.get_by_test_id("meter-cost")).to_have_text(cny(mine["cost_micro"]))


def test_an_agent_is_created_from_a_sentence_and_its_versions_show_their_diff(
    page: Page, server: LiveServer, upstream: RecordingUpstream
) -> None:
    key = server.new_tenant_key("umbrella")
    sign_in(page, server, key, "#/agents")
    model_writes(upstream, WATCHER)
    page.get_by_test_id("agent-description").fill(
        "Every weekday at 8:00, check the price of the Lumen monitor and tell me when it is under 2,100 yuan"
    )
    page.get_by_test_id("agent-draft").click()
    proposal = page.get_by_test_id("agent-proposal")
    expect(proposal).to_contain_text("lumen-price-watch")
    expect(proposal).to_contain_text("0 8 * * 1-5")
    assert api(server, key, "GET", "/v1/agents").json()["data"] == [], "nothing is saved before review"
    shoot(page, "04-agents-review")
    page.get_by_test_id("agent-save").click()
    expect(page.get_by_test_id("agent-saved")).to_contain_text("Saved lumen-price-watch, version 1")
    expect(page.get_by_test_id("agent-table")).to_contain_text("lumen-price-watch")
    saved = api(server, key, "GET", "/v1/agents/lumen-price-watch").json()
    assert saved["spec"]["instructions"] == WATCHER["instructions"]

    changed = {**saved["spec"], "instructions": "Check only the first shop."}
    assert api(server, key, "POST", "/v1/agents", json=changed).status_code == 201
    page.get_by_role("link", name="lumen-price-watch").click()
    expect(page.get_by_test_id("page-agent")).to_contain_text("version 2")
    diff = page.get_by_test_id("agent-diff")
    expect(diff.locator(".add")).to_contain_text(["+instructions: Check only the first shop."])
    expect(diff.locator(".del")).to_contain_text("-instructions: Check the Lumen")
    triggers = api(server, key, "GET", "/v1/agents/lumen-price-watch/triggers").json()["data"]
    assert triggers and triggers[0]["next_at"] is not None
    expect(page.get_by_test_id("agent-triggers")).to_contain_text(
        "next " + page.evaluate("s => fmt.when(s)", triggers[0]["next_at"])
    )
    shoot(page, "05-agent-versions")

    # Run it from its page: the new process opens and runs to its answer.
    page.get_by_placeholder("What should it work on?").fill("check now")
    page.get_by_role("button", name="Start a process").click()
    expect(page.get_by_test_id("process-state")).to_have_text("done")
    runs = api(server, key, "GET", "/v1/processes", params={"agent": "lumen-price-watch"}).json()["data"]
    assert [p["input"] for p in runs] == ["check now"]

    # A sentence the model cannot make into an agent is refused with the reason, and nothing is saved.
    page.get_by_role("link", name="Agents").click()
    model_writes(upstream, "not json", "still not json", "nope")
    page.get_by_test_id("agent-description").fill("do the thing")
    page.get_by_test_id("agent-draft").click()
    expect(page.get_by_test_id("agent-error")).to_contain_text("Could not compile the agent")
    assert len(api(server, key, "GET", "/v1/agents").json()["data"]) == 1


def start_keeper(server: LiveServer, upstream: RecordingUpstream, key: str) -> str:
    """A process stopped at a call that waits for a person's approval."""
    assert api(server, key, "POST", "/v1/agents", json=KEEPER).status_code in (200, 201)
    upstream.script[:] = [
        tool_call("memory__write", {"text": "the meeting moved to Friday"}),
        {"role": "assistant", "content": "Noted."},
    ]
    pid: str = api(
        server, key, "POST", "/v1/processes", json={"agent": "note-keeper", "input": "Friday"}
    ).json()["pid"]
    wait_state(server, key, pid, ("waiting_approval",))
    return pid


def test_approving_a_pending_call_lets_the_process_finish(
    page: Page, server: LiveServer, upstream: RecordingUpstream
) -> None:
    key = server.new_tenant_key("hooli")
    pid = start_keeper(server, upstream, key)
    sign_in(page, server, key, "#/approvals")
    card = page.locator(f"[data-approval^='{pid}']")
    expect(card).to_contain_text("memory.write")
    expect(card).to_contain_text("the meeting moved to Friday")
    expect(page.get_by_test_id("pending-count")).to_have_text("1")
    shoot(page, "06-approvals")
    card.get_by_test_id("approve").click()
    expect(page.get_by_test_id("approval-notice")).to_contain_text(f"Approved memory.write: process {pid}")
    assert wait_state(server, key, pid, ("done",))["result"] == "Noted."

    page.get_by_role("link", name="Processes").click()
    page.locator(f"tr[data-pid='{pid}'] a").click()
    expect(page.get_by_test_id("process-state")).to_have_text("done")
    journal = page.get_by_test_id("journal")
    expect(journal.locator("li[data-kind='approval']").first).to_contain_text("memory.write")
    expect(journal.locator("li[data-kind='tool_result']")).to_contain_text("memory.write answered")
    expect(journal.locator("li[data-kind='model_response']").first).to_contain_text(
        "10 prompt + 2 completion tokens"
    )
    expect(page.get_by_test_id("process-result")).to_have_text("Noted.")
    shoot(page, "07-process-journal")


def test_a_process_is_paused_resumed_and_killed_from_its_page(
    page: Page, server: LiveServer, upstream: RecordingUpstream
) -> None:
    key = server.new_tenant_key("soylent")
    pid = start_keeper(server, upstream, key)
    sign_in(page, server, key, "#/processes")
    row = page.locator(f"tr[data-pid='{pid}']")
    expect(row).to_contain_text("waiting_approval")
    page.get_by_test_id("filter-state").select_option("done")
    expect(row).to_be_hidden()
    page.get_by_test_id("filter-state").select_option("live")
    expect(row).to_be_visible()
    shoot(page, "08-processes")

    row.locator("a").click()
    page.get_by_test_id("pause").click()
    expect(page.get_by_test_id("process-state")).to_have_text("suspended")
    assert api(server, key, "GET", f"/v1/processes/{pid}").json()["state"] == "suspended"
    page.get_by_test_id("resume").click()
    expect(page.get_by_test_id("process-state")).not_to_have_text("suspended")
    page.get_by_test_id("kill").click()
    page.get_by_test_id("kill-confirm").click()
    expect(page.get_by_test_id("process-state")).to_have_text("killed")
    assert api(server, key, "GET", f"/v1/processes/{pid}").json()["state"] == "killed"
    expect(page.get_by_test_id("kill")).to_be_disabled()
    shoot(page, "09-process-killed")


def test_the_grid_and_the_services_pages_show_what_the_api_says(page: Page, server: LiveServer) -> None:
    service = {
        "name": "calculator",
        "kind": "mcp",
        "command": [sys.executable, str(STDIO_SERVER)],
        "manifest": {
            "category": "math",
            "description": "Adds numbers.",
            "operations": {"add": {}, "echo": {}},
        },
    }
    added = server.admin("POST", "/admin/services", json=service)
    assert added.status_code == 201, added.text
    chat(server, ADMIN_KEY, 1)
    sign_in(page, server, ADMIN_KEY, "#/grid")
    deployment = server.admin("GET", "/admin/deployments").json()["data"][0]
    row = page.get_by_test_id("deployments").locator("tbody tr").first
    expect(row).to_contain_text(deployment["name"])
    expect(row.locator("td").nth(4)).to_have_text("ok")
    assert deployment["latency_s"] is not None and deployment["tokens_per_s"] is not None
    shoot(page, "10-grid")

    page.get_by_role("link", name="Services").click()
    card = page.locator("[data-service='calculator']")
    expect(card).to_contain_text("up")
    expect(card.locator("tbody tr").first).to_contain_text("Add two integers.")
    expect(card.locator("tbody tr").first).to_contain_text("a, b")
    shoot(page, "11-services")


def test_the_console_fits_a_phone_screen(browser: Browser, server: LiveServer) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone = context.new_page()
    try:
        sign_in(phone, server, ADMIN_KEY)
        for where in ("meter", "processes", "approvals", "agents"):
            phone.goto(f"{server.url}/#/{where}")
            expect(phone.get_by_test_id(f"page-{where}")).to_be_visible()
            phone.wait_for_timeout(300)
            wide: Any = phone.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390, f"the {where} page scrolls sideways on a phone ({wide}px)"
            shoot(phone, f"12-phone-{where}")
    finally:
        context.close()


def test_the_page_loads_nothing_from_anywhere_else(server: LiveServer) -> None:
    page = api(server, ADMIN_KEY, "GET", "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    for asset in ("/console/app.js", "/console/pages.js", "/console/vendor/alpine.min.js"):
        assert api(server, ADMIN_KEY, "GET", asset).status_code == 200
    chart = api(server, ADMIN_KEY, "GET", "/console/vendor/chart.umd.min.js")
    assert chart.status_code == 200 and chart.headers["content-encoding"] == "gzip", "a phone gets it small"
    assert chart.num_bytes_downloaded < len(chart.content) / 2
    assert api(server, ADMIN_KEY, "GET", "/console/index.html").status_code == 404, "the page is only at /"
    moved = httpx.get(server.url + "/console", follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"] == "/"
    missing = api(server, ADMIN_KEY, "GET", "/console/nope.js")
    assert missing.status_code == 404 and json.loads(missing.text)["error"]["code"] == "not_found"
