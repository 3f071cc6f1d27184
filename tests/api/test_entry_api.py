"""The super entry on a live server with the five example services: ask, confirm once, carry out.

The planner's model is scripted (the recording upstream answers with the plan); the services are
the real example processes, so what is checked is what their databases say.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.examples.test_services import SERVICES, Service, check_consistency, connect
from tests.support import LiveServer, RecordingUpstream, aigrid

from aigrid.entry.planner import REDRAW_TEMPERATURE, REDRAWS, to_written

pytestmark = pytest.mark.slow

SERVER_CONFIG = '[kernel]\nplanner_model = "mock"\n'
MANIFESTS = {
    "northwind": "shop",
    "lakeside": "shop",
    "payment": "payment",
    "travel": "travel",
    "food": "food",
}
EARBUDS = {
    "steps": [
        {"id": "a", "call": "northwind.search", "args": {"query": "aurora x2 wireless earbuds"}},
        {"id": "b", "call": "lakeside.search", "args": {"query": "aurora x2 wireless earbuds"}},
        {"id": "pick", "choose": "cheapest", "from": ["a", "b"], "where": "available", "match": "aurora x2"},
        {"id": "buy", "call": "northwind.create_order", "args": {"sku": "$pick.sku", "quantity": 1}},
    ]
}


def pan_plan(quantity: int = 1) -> dict[str, Any]:
    return {
        "steps": [
            {"id": "a", "call": "northwind.search", "args": {"query": "cast iron pan"}},
            {"id": "pick", "choose": "cheapest", "from": ["a"], "where": "available"},
            {
                "id": "buy",
                "call": "northwind.create_order",
                "args": {"sku": "$pick.sku", "quantity": quantity},
            },
        ]
    }


def register(server: LiveServer, services: dict[str, Service]) -> None:
    """Register the example services with the server, as `make run` does."""
    for name, service in services.items():
        manifest = json.loads((SERVICES / f"{MANIFESTS[name]}.manifest.json").read_text())
        body = {"name": name, "kind": "mcp", "url": service.url, "manifest": manifest}
        added = server.admin("POST", "/admin/services", json=body)
        assert added.status_code == 201, added.text


def plans(upstream: RecordingUpstream, *written: dict[str, Any] | str) -> None:
    """The planner's next answers: a plan in its own form is written as the model writes it
    (numbered steps); text goes as it is."""
    upstream.script[:] = [
        {"role": "assistant", "content": w if isinstance(w, str) else json.dumps(to_written(w))}
        for w in written
    ]


def call(server: LiveServer, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.request(method, server.url + path, headers=headers, timeout=310, **kwargs)


def ledger(services: dict[str, Service], name: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with connect(services[name]) as session:
            return list((await session.ok("ledger"))["entries"])

    return asyncio.run(read())


def balance(services: dict[str, Service], user: str) -> int:
    async def read() -> int:
        async with connect(services["payment"]) as session:
            return int((await session.ok("balance", user=user))["balance_cents"])

    return asyncio.run(read())


def consistent(services: dict[str, Service]) -> None:
    asyncio.run(check_consistency(services))
    held = [p for p in ledger(services, "payment") if p["state"] == "authorised"]
    assert not held, f"money is still held: {held}"


def test_a_sentence_is_planned_read_confirmed_once_and_carried_out(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service]
) -> None:
    key = server.new_tenant_key("shoppers", users=("alice",))
    plans(upstream, EARBUDS)
    asked = call(
        server,
        key,
        "POST",
        "/v1/entry",
        json={"input": "buy the cheapest Aurora X2 earbuds", "user": "alice"},
    )
    assert asked.status_code == 200, asked.text
    entry = asked.json()
    assert entry["state"] == "awaiting_confirmation"
    assert entry["summary"]["text"].splitlines() == [
        "Buy 1 × Aurora X2 Wireless Earbuds from lakeside for 279.00",
        "Total 279.00, paid from alice's wallet.",
    ], "the cheaper shop is chosen, and the user sees what, from whom and the total"
    assert not ledger(services, "lakeside"), "nothing changes before the user confirms"
    request = upstream.requests[-1]
    assert request["response_format"]["type"] == "json_schema", "the planner writes under a grammar"
    prompt = request["messages"][0]["content"]  # the operations are in the system turn
    assert request["messages"][-1]["content"] == "Request: buy the cheapest Aurora X2 earbuds"
    assert "northwind.search" in prompt and "lakeside.create_order" in prompt
    assert "travel." not in prompt and "food." not in prompt, "it sees only the operations the sentence needs"
    assert "payment.capture" not in prompt and "cancel_order" not in prompt, (
        "paying and undoing are the saga's"
    )

    before = balance(services, "alice")
    done = call(server, key, "POST", f"/v1/entry/{entry['id']}/confirm")
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "done"
    orders = ledger(services, "lakeside")
    assert len(orders) == 1 and orders[0]["amount_cents"] == 27_900
    assert orders[0]["id"] in done.json()["answer"], "the answer gives the order id"
    assert balance(services, "alice") == before - 27_900
    consistent(services)

    again = call(server, key, "POST", f"/v1/entry/{entry['id']}/confirm")
    assert again.status_code == 409 and "is done" in again.json()["error"]["message"]
    shown = call(server, key, "GET", f"/v1/entry/{entry['id']}").json()
    assert [s["action"] for s in shown["journal"] if s["kind"] == "result"] == [
        "authorise:0",
        "act:0",
        "capture:0",
    ]
    assert ledger(services, "lakeside") == orders, "a second confirmation buys nothing"


def test_a_declined_entry_buys_nothing_and_others_cannot_see_it(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service]
) -> None:
    key = server.new_tenant_key("decliners", users=("carol",))
    other = server.new_tenant_key("strangers")
    plans(upstream, pan_plan())
    entry = call(
        server, key, "POST", "/v1/entry", json={"input": "buy a cast iron pan", "user": "carol"}
    ).json()
    assert call(server, other, "GET", f"/v1/entry/{entry['id']}").status_code == 404
    assert call(server, other, "POST", f"/v1/entry/{entry['id']}/confirm").status_code == 404
    declined = call(server, key, "POST", f"/v1/entry/{entry['id']}/decline")
    assert declined.json()["state"] == "declined"
    assert call(server, key, "POST", f"/v1/entry/{entry['id']}/confirm").status_code == 409
    assert not [o for o in ledger(services, "northwind") if o["amount_cents"] == 25_900]
    listed = call(server, key, "GET", "/v1/entry", params={"state": "declined"}).json()["data"]
    assert [e["id"] for e in listed] == [entry["id"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": "   "}, "Say in a sentence"),
        ({"input": 5}, "'input' must be"),
        ({"input": "buy a pan", "confirm": "yes"}, "'confirm' must be true or false"),
        ({"input": "buy a pan", "user": "bob; drop"}, "is not a user name"),
        ({"input": "buy a pan", "plan": []}, "'plan' must be an object"),
        ({"input": "buy a pan", "wait": -1}, "'wait' must be"),
        ({"input": "x" * 1001}, "longer than 1000 characters"),
    ],
)
def test_bad_requests_are_clear_400s(
    server: LiveServer, services: dict[str, Service], body: dict[str, Any], message: str
) -> None:
    refused = server.admin("POST", "/v1/entry", json=body)
    assert refused.status_code == 400, refused.text
    assert message in refused.json()["error"]["message"]


def test_unknown_entries_and_states_are_refused(server: LiveServer, services: dict[str, Service]) -> None:
    assert server.admin("GET", "/v1/entry/ent-0000000000000000").status_code == 404
    assert server.admin("POST", "/v1/entry/ent-0000000000000000/decline").status_code == 404
    assert server.admin("GET", "/v1/entry", params={"state": "lost"}).status_code == 400
    assert server.admin("POST", "/v1/entry", content=b"{not json").status_code == 400


@pytest.mark.parametrize(
    ("plan", "answer"),
    [
        (
            {
                "steps": [
                    {"id": "a", "call": "northwind.search", "args": {"query": "hoverboard"}},
                    {"id": "b", "call": "lakeside.search", "args": {"query": "hoverboard"}},
                    {"id": "pick", "choose": "cheapest", "from": ["a", "b"]},
                    {
                        "id": "buy",
                        "call": "northwind.create_order",
                        "args": {"sku": "$pick.sku", "quantity": 1},
                    },
                ]
            },
            "Nothing was done: nothing was found at northwind, lakeside.",
        ),
        ({"steps": []}, "Nothing was done: none of the registered services can do that."),
    ],
)
def test_what_cannot_be_done_says_why_and_buys_nothing(
    server: LiveServer,
    upstream: RecordingUpstream,
    services: dict[str, Service],
    plan: dict[str, Any],
    answer: str,
) -> None:
    plans(upstream, plan)
    before = ledger(services, "payment")
    entry = server.admin(
        "POST", "/v1/entry", json={"input": "buy a hoverboard", "user": "alice", "confirm": True}
    ).json()
    assert (entry["state"], entry["answer"]) == ("failed", answer)
    assert ledger(services, "payment") == before


def test_not_enough_money_buys_nothing(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service]
) -> None:
    plans(upstream, pan_plan(quantity=1))
    entry = server.admin(
        "POST", "/v1/entry", json={"input": "buy a pan", "user": "bob", "confirm": True}
    ).json()
    assert entry["state"] == "failed"
    assert entry["answer"].startswith("Nothing was bought: not enough money: bob has 8000 cents available")
    assert balance(services, "bob") == 8_000
    consistent(services)


def test_a_plan_that_cannot_run_is_drawn_again_and_one_that_holds_is_taken(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service]
) -> None:
    wrong = {"steps": [{"id": "a", "call": "northwind.search", "args": {"q": "pan"}}]}
    good = {
        "steps": [
            {"id": "a", "call": "northwind.search", "args": {"query": "quill pen"}},
            {"id": "p", "choose": "cheapest", "from": ["a"], "where": "available", "match": ""},
        ]
    }
    plans(upstream, wrong, wrong, good)
    asked = len(upstream.requests)
    entry = server.admin(
        "POST", "/v1/entry", json={"input": "what does a quill pen cost?", "user": "alice"}
    ).json()
    assert entry["state"] == "done"
    assert (
        entry["answer"] == "Found: Quill Fountain Pen (NW-1026) at northwind for 189.00. Nothing was bought."
    )
    drawn = upstream.requests[asked + 1 :]
    assert len(drawn) == REDRAWS and {r["temperature"] for r in drawn} == {REDRAW_TEMPERATURE}
    assert all(r["messages"] == upstream.requests[asked]["messages"] for r in drawn), "the same prompt"

    plans(upstream, *[wrong] * (1 + REDRAWS))
    failed = server.admin(
        "POST", "/v1/entry", json={"input": "what does a quill pen cost?", "user": "alice"}
    ).json()
    assert failed["state"] == "failed"
    assert "gives northwind.search arguments it does not take: q" in failed["answer"]


def test_aigrid_ask_shows_the_summary_and_asks_once(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service]
) -> None:
    plans(upstream, pan_plan())
    said_no = aigrid(server, "ask", "buy a cast iron pan", "--user", "carol", answer="n\n")
    assert said_no.returncode == 0, said_no.stderr
    assert "Buy 1 × Cedar Cast Iron Pan 28cm from northwind for 259.00" in said_no.stdout
    assert "Declined: nothing was bought." in said_no.stdout

    plans(upstream, pan_plan())
    no_terminal = aigrid(server, "ask", "buy a cast iron pan", "--user", "carol")
    assert no_terminal.returncode == 2 and "pass --yes" in no_terminal.stderr

    plans(upstream, pan_plan())
    before = balance(services, "carol")
    said_yes = aigrid(server, "ask", "buy a cast iron pan", "--user", "carol", "--yes")
    assert said_yes.returncode == 0, said_yes.stderr
    assert "Bought 1 × Cedar Cast Iron Pan 28cm from northwind for 259.00" in said_yes.stdout
    assert balance(services, "carol") == before - 25_900
    consistent(services)


def test_aigrid_ask_carries_out_a_plan_from_a_file_and_refuses_a_bad_one(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service], tmp_path: Path
) -> None:
    written = tmp_path / "plan.json"
    written.write_text(json.dumps(pan_plan(2)))
    asked = len(upstream.requests)
    before = balance(services, "carol")
    bought = aigrid(
        server, "ask", "buy two cast iron pans", "--user", "carol", "--yes", "--plan", str(written)
    )
    assert bought.returncode == 0, bought.stderr
    assert "Bought 2 × Cedar Cast Iron Pan 28cm from northwind" in bought.stdout
    assert balance(services, "carol") == before - 2 * 25_900
    assert len(upstream.requests) == asked, "the model was not asked"

    missing = aigrid(server, "ask", "buy a pan", "--plan", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
    written.write_text("[1, 2]")
    not_one = aigrid(server, "ask", "buy a pan", "--plan", str(written))
    assert not_one.returncode == 2 and "must hold one plan (an object)" in not_one.stderr
    written.write_text(json.dumps({"steps": [{"id": "a", "call": "nowhere.buy", "args": {}}]}))
    refused = aigrid(server, "ask", "buy a pan", "--plan", str(written), "--yes")
    assert refused.returncode == 1 and "nowhere.buy" in refused.stdout
    consistent(services)


def test_the_entry_model_asks_in_one_turn_and_acts_on_yes(
    server: LiveServer, upstream: RecordingUpstream, services: dict[str, Service]
) -> None:
    client = server.openai(server.new_tenant_key("chatters", users=("alice",)))
    plans(upstream, pan_plan())
    question = [{"role": "user", "content": "buy me a cast iron pan"}]
    first = client.chat.completions.create(model="entry", messages=question, user="alice")  # type: ignore[arg-type]
    text = first.choices[0].message.content or ""
    assert "Buy 1 × Cedar Cast Iron Pan 28cm from northwind for 259.00" in text and "Reply yes" in text
    turns = [*question, {"role": "assistant", "content": text}, {"role": "user", "content": "Yes."}]
    chunks = list(client.chat.completions.create(model="entry", messages=turns, user="alice", stream=True))  # type: ignore[arg-type]
    said = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert said.startswith("Bought 1 × Cedar Cast Iron Pan 28cm from northwind for 259.00")
    consistent(services)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "The last message must be the user's"),
        ({"messages": [{"role": "user", "content": "buy a pan"}], "stream": "yes"}, "'stream' must be"),
        ({"messages": [{"role": "user", "content": "buy a pan"}], "user": 7}, "'user' must be a string"),
    ],
)
def test_the_entry_model_answers_bad_requests_with_clear_400s(
    server: LiveServer, services: dict[str, Service], body: dict[str, Any], message: str
) -> None:
    refused = server.admin("POST", "/v1/chat/completions", json={"model": "entry", **body})
    assert refused.status_code == 400, refused.text
    assert message in refused.json()["error"]["message"]
