"""Every route of the app, walked with a second tenant's key aimed at the first tenant's things.

Tenant A owns one of each thing a tenant can own or have kept for it: an agent (two versions, a
webhook and a timed trigger), processes (one done, one waiting for an approval, one a webhook
started), their journals and audit records, an inbox note, a memory, an entry waiting for its
confirmation, feedback, traces, experience examples, an eval run, a completion, a budget, rate
limits, a tool provider and a service of its own, and a dataset the admin built from its traces.
Tenant B has only a key. For each (method, path) the app serves, ``ROUTES`` says how B aims at
A's things there (A's ids in the path, ``?tenant=`` A's name, A's ids in the body); each answer
must be a refusal in the OpenAI error shape or a success that holds nothing of A's, and after
each route's requests everything of A's reads back as it was. A request that makes the caller a
record of its own holding A's names (a chat tagged with A's agent and process, an entry whose plan
calls A's service, a memory under A's key name) is sent with a third tenant's key, C's, so that
B's later reads are not taken to leak what B itself sent.

The table is checked against the app's own route table (and the hot path's token endpoints),
so a route added later without an isolation case fails here until it gets one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from tests.examples.test_services import SERVICES, Service, started
from tests.routes import app_routes
from tests.support import LiveServer, RecordingUpstream

pytestmark = pytest.mark.slow

SERVER_CONFIG = '[kernel]\nplanner_model = "mock"\ncompiler_model = "mock"\nagent_model = "mock"\n'

# In every text of tenant A's and in no request of B's: any answer to B that holds it leaks.
SECRET = "plumtree"
TENANT_A, TENANT_B, TENANT_C = "qzvx-tenant-a", "tenant-b", "tenant-c"
AGENT = "qzvx-agent"
SHOP = "qzvxshop"  # a service only tenant A may use
PETS = "qzvxpets"  # a tool provider only tenant A's agents may use
MEMORY_KEY = "qzvx-key"
PETSTORE = Path(__file__).parent.parent / "kernel" / "petstore.yaml"
# A refusal says no and names nothing of A's; 409 is not one: it says B reached the thing.
REFUSALS = frozenset({400, 401, 403, 404, 405, 422})
ADMIN_REFUSALS = frozenset({401, 403})

Category = Literal["tenant", "admin", "public"]


@dataclass(frozen=True)
class Owned:
    """What tenant A owns, by the handles B can name, and the three tenants' keys."""

    key_a: str
    key_b: str
    key_c: str
    key_a_id: str
    webhook_secret: str
    done_pid: str
    waiting_pid: str
    webhook_pid: str
    approval: str
    entry: str
    memory: int
    completion: str
    eval_run: str
    traces: tuple[int, ...]
    examples: tuple[int, ...]
    dataset: str

    @property
    def pids(self) -> tuple[str, ...]:
        return (self.done_pid, self.waiting_pid, self.webhook_pid)

    def handles(self) -> set[str]:
        """A's names and ids as text: an answer to B may hold one only if B's request did."""
        return {
            TENANT_A,
            AGENT,
            SHOP,
            PETS,
            MEMORY_KEY,
            self.key_a_id,
            self.webhook_secret,
            *self.pids,
            self.approval,
            self.entry,
            self.completion,
            self.eval_run,
            self.dataset,
        }


@dataclass(frozen=True)
class Ask:
    """One request of B's (of C's when it ``keeps`` what it sends in a record of the caller's)."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    keeps: bool = False

    def text(self) -> str:
        """All B sends, to tell an echo of it from a leak."""
        return " ".join(
            [self.path, json.dumps(self.params), json.dumps(self.body), json.dumps(self.headers)]
            + ([self.content.decode()] if self.content else [])
        )


@dataclass(frozen=True)
class Case:
    """How B aims at A's things on one route, and what the route is."""

    category: Category
    asks: Callable[[Owned], list[Ask]]
    why: str = ""


def tenant(asks: Callable[[Owned], list[Ask]]) -> Case:
    """A route that reaches the caller's tenant's things: refused, or only B's own come back."""
    return Case("tenant", asks)


def admin(asks: Callable[[Owned], list[Ask]]) -> Case:
    """A route for the admin key only: B's key is refused, whatever it names."""
    return Case("admin", asks)


def public(why: str, asks: Callable[[Owned], list[Ask]]) -> Case:
    """A route that holds no tenant's things (``why`` says so); still nothing of A's may show."""
    return Case("public", asks, why)


def get(path: str, **params: str) -> Ask:
    return Ask("GET", path, params)


def plain_and_as_a(method: str, path: str, body: Any = None) -> list[Ask]:
    """The request as B's own, and naming tenant A with ``?tenant=``."""
    return [Ask(method, path, body=body), Ask(method, path, {"tenant": TENANT_A}, body)]


def mock_chat(content: str) -> dict[str, Any]:
    return {"model": "mock", "messages": [{"role": "user", "content": content}], "max_tokens": 4}


def shop_plan() -> dict[str, Any]:
    return {
        "steps": [
            {"id": "a", "call": f"{SHOP}.search", "args": {"query": "cast iron pan"}},
            {"id": "pick", "choose": "cheapest", "from": ["a"], "where": "available"},
            {"id": "buy", "call": f"{SHOP}.create_order", "args": {"sku": "$pick.sku", "quantity": 1}},
        ]
    }


def entry_reply(entry: str, reply: str) -> dict[str, Any]:
    """A chat with the ``entry`` model answering ``reply`` to a turn that asked about ``entry``."""
    return {
        "model": "entry",
        "messages": [
            {"role": "user", "content": "buy a pan"},
            {"role": "assistant", "content": f"Buy it? (entry {entry})"},
            {"role": "user", "content": reply},
        ],
    }


FOR_A_BY_B = {
    "name": "bservice",
    "kind": "mcp",
    "url": "http://127.0.0.1:9/mcp",
    "tenant": TENANT_A,
    "manifest": {"category": "shop", "description": "x", "operations": {}},
}

# Every route: (method, path template) -> how B aims at A's things there. HEAD is answered as GET
# (Starlette adds it to each GET route) and is not walked on its own.
ROUTES: dict[tuple[str, str], Case] = {
    # -- public: no tenant's things behind them --------------------------------------------------
    ("GET", "/healthz"): public("a liveness check", lambda o: [get("/healthz")]),
    ("GET", "/openapi.json"): public("the API's description", lambda o: [get("/openapi.json")]),
    ("GET", "/docs"): public("the API's documentation page", lambda o: [get("/docs")]),
    ("GET", "/docs/oauth2-redirect"): public(
        "a static page of the documentation", lambda o: [get("/docs/oauth2-redirect")]
    ),
    ("GET", "/"): public("the console's page; it signs in in the browser", lambda o: [get("/")]),
    ("GET", "/console"): public("a redirect to the console's page", lambda o: [get("/console")]),
    ("GET", "/console/{path:path}"): public(
        "the console's static files", lambda o: [get("/console/app.js"), get("/console/pages.js")]
    ),
    ("GET", "/v1/learn/suites"): public(
        "the eval suites, the same for every tenant", lambda o: [get("/v1/learn/suites")]
    ),
    # -- the token endpoints (the hot path) ------------------------------------------------------
    ("POST", "/v1/chat/completions"): tenant(
        lambda o: [
            Ask("POST", "/v1/chat/completions", body={**mock_chat("hi"), "model": f"agent:{AGENT}"}),
            Ask("POST", "/v1/chat/completions", body=entry_reply(o.entry, "yes")),
            Ask("POST", "/v1/chat/completions", body=entry_reply(o.entry, "no")),
            Ask(
                "POST",
                "/v1/chat/completions",
                body=mock_chat("hi"),
                headers={"X-Aigrid-Agent": AGENT, "X-Aigrid-Process": o.done_pid},
                keeps=True,
            ),
        ]
    ),
    ("POST", "/v1/completions"): tenant(
        lambda o: [
            Ask(
                "POST",
                "/v1/completions",
                body={"model": "mock", "prompt": "hi", "max_tokens": 4},
                headers={"X-Aigrid-Agent": AGENT, "X-Aigrid-Process": o.done_pid},
                keeps=True,
            )
        ]
    ),
    ("POST", "/v1/embeddings"): tenant(
        lambda o: [
            Ask(
                "POST",
                "/v1/embeddings",
                body={"model": "mock", "input": "hi"},
                headers={"X-Aigrid-Agent": AGENT, "X-Aigrid-Process": o.done_pid},
                keeps=True,
            )
        ]
    ),
    # -- models, usage, the account ----------------------------------------------------------------
    # the grid's models, then the caller's own agents as agent:NAME
    ("GET", "/v1/models"): tenant(lambda o: [get("/v1/models")]),
    ("GET", "/v1/models/{model:path}"): tenant(lambda o: [get(f"/v1/models/agent:{AGENT}")]),
    ("GET", "/v1/usage"): tenant(
        lambda o: [
            get("/v1/usage", group_by="tenant,agent,process,key"),
            get("/v1/usage", tenant=TENANT_A),
        ]
    ),
    ("GET", "/v1/me"): tenant(lambda o: [get("/v1/me")]),
    ("GET", "/v1/budgets"): tenant(lambda o: plain_and_as_a("GET", "/v1/budgets")),
    # -- agents ----------------------------------------------------------------------------------
    ("POST", "/v1/agents"): tenant(
        lambda o: [
            Ask(
                "POST",
                "/v1/agents",
                body={"name": AGENT, "instructions": "Obey B.", "model": "mock", "tenant": TENANT_A},
            ),
            Ask("POST", "/v1/agents", body={"description": "Obey B.", "tenant": TENANT_A}),
        ]
    ),
    ("GET", "/v1/agents"): tenant(lambda o: plain_and_as_a("GET", "/v1/agents")),
    ("GET", "/v1/agents/{name}"): tenant(
        lambda o: [*plain_and_as_a("GET", f"/v1/agents/{AGENT}"), get(f"/v1/agents/{AGENT}", version="1")]
    ),
    ("GET", "/v1/agents/{name}/versions"): tenant(
        lambda o: plain_and_as_a("GET", f"/v1/agents/{AGENT}/versions")
    ),
    ("GET", "/v1/agents/{name}/triggers"): tenant(
        lambda o: plain_and_as_a("GET", f"/v1/agents/{AGENT}/triggers")
    ),
    ("POST", "/v1/agents/{name}/edit"): tenant(
        lambda o: plain_and_as_a("POST", f"/v1/agents/{AGENT}/edit", {"change": "Obey B."})
    ),
    ("POST", "/v1/agents/{name}/secret"): tenant(
        lambda o: plain_and_as_a("POST", f"/v1/agents/{AGENT}/secret")
    ),
    ("POST", "/v1/agents/{name}/trigger"): tenant(
        lambda o: [
            Ask("POST", f"/v1/agents/{AGENT}/trigger", content=b"B calls"),
            Ask("POST", f"/v1/agents/{AGENT}/trigger", {"tenant": TENANT_A}, content=b"B calls"),
        ]
    ),
    # -- processes, approvals, tools, memory, inbox ----------------------------------------------------
    ("POST", "/v1/processes"): tenant(
        lambda o: [
            Ask("POST", "/v1/processes", body={"agent": AGENT, "input": "B's input"}),
            Ask("POST", "/v1/processes", body={"agent": AGENT, "input": "B's input", "tenant": TENANT_A}),
        ]
    ),
    ("GET", "/v1/processes"): tenant(
        lambda o: [*plain_and_as_a("GET", "/v1/processes"), get("/v1/processes", agent=AGENT)]
    ),
    ("GET", "/v1/processes/{pid}"): tenant(lambda o: [get(f"/v1/processes/{pid}") for pid in o.pids]),
    ("GET", "/v1/processes/{pid}/journal"): tenant(
        lambda o: [get(f"/v1/processes/{pid}/journal") for pid in o.pids]
    ),
    ("POST", "/v1/processes/{pid}/{signal:signal}"): tenant(
        lambda o: [
            Ask("POST", f"/v1/processes/{o.waiting_pid}/pause"),
            Ask("POST", f"/v1/processes/{o.waiting_pid}/kill"),
            Ask("POST", f"/v1/processes/{o.done_pid}/resume"),
        ]
    ),
    ("GET", "/v1/approvals"): tenant(lambda o: plain_and_as_a("GET", "/v1/approvals")),
    ("POST", "/v1/approvals/{id}/{decision}"): tenant(
        lambda o: [
            Ask("POST", f"/v1/approvals/{o.approval}/approve"),
            Ask("POST", f"/v1/approvals/{o.approval}/deny"),
        ]
    ),
    ("GET", "/v1/tools"): tenant(lambda o: plain_and_as_a("GET", "/v1/tools")),
    ("GET", "/v1/audit"): tenant(
        lambda o: [*plain_and_as_a("GET", "/v1/audit"), get("/v1/audit", pid=o.done_pid)]
    ),
    ("GET", "/v1/memory"): tenant(
        lambda o: [*plain_and_as_a("GET", "/v1/memory"), get("/v1/memory", q="harbour")]
    ),
    ("POST", "/v1/memory"): tenant(
        # Writing under A's key name writes the caller's own memory: A's stays as it is.
        lambda o: [
            Ask("POST", "/v1/memory", body={"text": "B's note", "key": MEMORY_KEY}, keeps=True),
            Ask("POST", "/v1/memory", {"tenant": TENANT_A}, {"text": "B's note", "key": MEMORY_KEY}),
        ]
    ),
    ("DELETE", "/v1/memory/{id}"): tenant(lambda o: plain_and_as_a("DELETE", f"/v1/memory/{o.memory}")),
    ("GET", "/v1/inbox"): tenant(lambda o: plain_and_as_a("GET", "/v1/inbox")),
    # -- services and the super entry -------------------------------------------------------------
    ("GET", "/v1/services"): tenant(lambda o: plain_and_as_a("GET", "/v1/services")),
    ("POST", "/v1/entry"): tenant(
        # A plan calling A's own service must not run for another tenant.
        lambda o: [
            Ask(
                "POST",
                "/v1/entry",
                body={"input": "buy a pan", "plan": shop_plan(), "confirm": True, "wait": 30},
                keeps=True,
            )
        ]
    ),
    ("GET", "/v1/entry"): tenant(lambda o: plain_and_as_a("GET", "/v1/entry")),
    ("GET", "/v1/entry/{id}"): tenant(lambda o: [get(f"/v1/entry/{o.entry}")]),
    ("POST", "/v1/entry/{id}/confirm"): tenant(
        lambda o: [Ask("POST", f"/v1/entry/{o.entry}/confirm", body={"wait": 5})]
    ),
    ("POST", "/v1/entry/{id}/decline"): tenant(lambda o: [Ask("POST", f"/v1/entry/{o.entry}/decline")]),
    # -- the learning loop -------------------------------------------------------------------------------
    ("GET", "/v1/traces"): tenant(lambda o: plain_and_as_a("GET", "/v1/traces")),
    ("GET", "/v1/traces/{id}"): tenant(lambda o: [get(f"/v1/traces/{t}") for t in o.traces]),
    ("POST", "/v1/feedback"): tenant(
        lambda o: [
            Ask("POST", "/v1/feedback", body={"process": o.done_pid, "rating": -1, "comment": "B"}),
            Ask("POST", "/v1/feedback", body={"entry": o.entry, "rating": -1}),
            Ask("POST", "/v1/feedback", body={"agent": AGENT, "rating": -1}),
            Ask("POST", "/v1/feedback", body={"completion": o.completion, "rating": -1}),
            Ask("POST", "/v1/feedback", body={"agent": AGENT, "rating": -1, "tenant": TENANT_A}),
        ]
    ),
    ("GET", "/v1/feedback"): tenant(
        lambda o: [*plain_and_as_a("GET", "/v1/feedback"), get("/v1/feedback", target=o.done_pid)]
    ),
    ("POST", "/v1/learn/evals"): tenant(
        lambda o: [Ask("POST", "/v1/learn/evals", body={"suite": "compiler", "limit": 1, "tenant": TENANT_A})]
    ),
    ("GET", "/v1/learn/evals"): tenant(lambda o: plain_and_as_a("GET", "/v1/learn/evals")),
    ("GET", "/v1/learn/evals/{id}"): tenant(lambda o: [get(f"/v1/learn/evals/{o.eval_run}")]),
    ("GET", "/v1/learn/compare"): tenant(lambda o: [get("/v1/learn/compare", a=o.eval_run, b=o.eval_run)]),
    ("GET", "/v1/learn/memory"): tenant(lambda o: plain_and_as_a("GET", "/v1/learn/memory")),
    ("DELETE", "/v1/learn/memory/{id:example}"): tenant(
        lambda o: [Ask("DELETE", f"/v1/learn/memory/{e}") for e in o.examples]
    ),
    ("POST", "/v1/learn/memory/teach"): tenant(
        lambda o: [
            Ask("POST", "/v1/learn/memory/teach", body={"suite": "compiler", "limit": 1, "tenant": TENANT_A})
        ]
    ),
    # -- the admin's: the self-training loop, metrics, /admin ----------------------------------------------
    ("POST", "/v1/learn/datasets"): admin(
        lambda o: [Ask("POST", "/v1/learn/datasets", body={"kind": "compiler", "tenant": TENANT_A})]
    ),
    ("GET", "/v1/learn/datasets"): admin(lambda o: [get("/v1/learn/datasets")]),
    ("GET", "/v1/learn/datasets/{id}"): admin(lambda o: [get(f"/v1/learn/datasets/{o.dataset}")]),
    ("GET", "/v1/learn/datasets/{id}/export"): admin(
        lambda o: [get(f"/v1/learn/datasets/{o.dataset}/export")]
    ),
    ("POST", "/v1/learn/models"): admin(
        lambda o: [Ask("POST", "/v1/learn/models", body={"kind": "compiler", "dataset": o.dataset})]
    ),
    ("GET", "/v1/learn/models"): admin(lambda o: [get("/v1/learn/models")]),
    ("GET", "/v1/learn/models/{name}"): admin(lambda o: [get("/v1/learn/models/compiler@1")]),
    ("POST", "/v1/learn/models/{name}/resume"): admin(
        lambda o: [Ask("POST", "/v1/learn/models/compiler@1/resume")]
    ),
    ("POST", "/v1/learn/models/{name}/promote"): admin(
        lambda o: [Ask("POST", "/v1/learn/models/compiler@1/promote")]
    ),
    ("POST", "/v1/learn/rollback"): admin(
        lambda o: [Ask("POST", "/v1/learn/rollback", body={"kind": "compiler"})]
    ),
    ("POST", "/v1/learn/rounds"): admin(
        lambda o: [Ask("POST", "/v1/learn/rounds", body={"kind": "compiler"})]
    ),
    ("GET", "/v1/learn/rounds"): admin(lambda o: [get("/v1/learn/rounds")]),
    ("GET", "/v1/learn/rounds/{id}"): admin(lambda o: [get("/v1/learn/rounds/round-1")]),
    ("GET", "/metrics"): admin(lambda o: [get("/metrics")]),
    ("POST", "/admin/tenants"): admin(lambda o: [Ask("POST", "/admin/tenants", body={"name": "made-by-b"})]),
    ("GET", "/admin/tenants"): admin(lambda o: [get("/admin/tenants")]),
    ("GET", "/admin/cluster"): admin(lambda o: [get("/admin/cluster")]),
    ("GET", "/admin/tenants/{tenant}/users"): admin(lambda o: [get(f"/admin/tenants/{TENANT_A}/users")]),
    ("PUT", "/admin/tenants/{tenant}/users/{user}"): admin(
        lambda o: [Ask("PUT", f"/admin/tenants/{TENANT_B}/users/alice")]
    ),
    ("DELETE", "/admin/tenants/{tenant}/users/{user}"): admin(
        lambda o: [Ask("DELETE", f"/admin/tenants/{TENANT_A}/users/alice")]
    ),
    ("POST", "/admin/keys"): admin(lambda o: [Ask("POST", "/admin/keys", body={"tenant": TENANT_A})]),
    ("GET", "/admin/keys"): admin(lambda o: [get("/admin/keys"), get("/admin/keys", tenant=TENANT_A)]),
    ("DELETE", "/admin/keys/{key_id}"): admin(lambda o: [Ask("DELETE", f"/admin/keys/{o.key_a_id}")]),
    ("PUT", "/admin/budgets"): admin(
        lambda o: [Ask("PUT", "/admin/budgets", body={"tenant": TENANT_A, "period": "month", "tokens": 1})]
    ),
    ("GET", "/admin/budgets"): admin(lambda o: [get("/admin/budgets", tenant=TENANT_A)]),
    ("DELETE", "/admin/budgets"): admin(
        lambda o: [Ask("DELETE", "/admin/budgets", {"tenant": TENANT_A, "kind": "tokens", "period": "month"})]
    ),
    ("PUT", "/admin/limits"): admin(
        lambda o: [Ask("PUT", "/admin/limits", body={"tenant": TENANT_A, "rpm": 1})]
    ),
    ("GET", "/admin/limits"): admin(lambda o: [get("/admin/limits", tenant=TENANT_A)]),
    ("GET", "/admin/deployments"): admin(lambda o: [get("/admin/deployments")]),
    ("POST", "/admin/services"): admin(lambda o: [Ask("POST", "/admin/services", body=FOR_A_BY_B)]),
    ("DELETE", "/admin/services/{name}"): admin(lambda o: [Ask("DELETE", f"/admin/services/{SHOP}")]),
    ("GET", "/admin/tools/providers"): admin(lambda o: [get("/admin/tools/providers")]),
    ("POST", "/admin/tools/providers"): admin(
        lambda o: [
            Ask(
                "POST",
                "/admin/tools/providers",
                body={"name": "bpets", "kind": "openapi", "spec": str(PETSTORE), "tenant": TENANT_A},
            )
        ]
    ),
    ("DELETE", "/admin/tools/providers/{name}"): admin(
        lambda o: [Ask("DELETE", f"/admin/tools/providers/{PETS}")]
    ),
    ("POST", "/admin/tools/providers/{name}/login"): admin(
        lambda o: [Ask("POST", f"/admin/tools/providers/{PETS}/login")]
    ),
    ("POST", "/admin/tools/providers/{name}/login/callback"): admin(
        lambda o: [
            Ask(
                "POST",
                f"/admin/tools/providers/{PETS}/login/callback",
                body={"redirect_url": "http://127.0.0.1/cb?code=x&state=y"},
            )
        ]
    ),
}


# -- tenant A's things ----------------------------------------------------------------------------------


def call(server: LiveServer, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.request(method, server.url + path, headers=headers, timeout=60, **kwargs)


def made(answer: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    return dict(answer.json())


def wait_state(server: LiveServer, key: str, pid: str, states: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        process = made(call(server, key, "GET", f"/v1/processes/{pid}"), 200)
        if process["state"] in states:
            return process
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never reached {states}")


def notify_call(text: str) -> dict[str, Any]:
    function = {"name": "notify__owner", "arguments": json.dumps({"text": text})}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": function}],
    }


@pytest.fixture(scope="module")
def shop_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    """A shop (to be tenant A's own service) and the payment service, as example processes."""
    base = tmp_path_factory.mktemp("isolation-services")
    with started(
        {
            SHOP: Service("shop.py", base / "shop", "--shop", "northwind"),
            "payment": Service("payment.py", base / "payment"),
        }
    ) as running:
        yield running


@pytest.fixture(scope="module")
def owned(server: LiveServer, upstream: RecordingUpstream, shop_services: dict[str, Service]) -> Owned:
    """Tenant A with one of each thing; tenant B with a key and nothing else."""
    key_a = server.new_tenant_key(TENANT_A, users=("alice",))
    key_b = server.new_tenant_key(TENANT_B)
    key_c = server.new_tenant_key(TENANT_C)
    (key_a_id,) = [
        k["id"] for k in made(server.admin("GET", "/admin/keys", params={"tenant": TENANT_A}), 200)["data"]
    ]

    for name, service in shop_services.items():
        manifest = json.loads((SERVICES / f"{'shop' if name == SHOP else name}.manifest.json").read_text())
        if name == SHOP:
            manifest["description"] = f"{SECRET}: {manifest['description']}"
        body = {"name": name, "kind": "mcp", "url": service.url, "manifest": manifest}
        made(
            server.admin(
                "POST", "/admin/services", json=body | ({"tenant": TENANT_A} if name == SHOP else {})
            )
        )
    pets = {"name": PETS, "kind": "openapi", "spec": str(PETSTORE), "base_url": "http://127.0.0.1:9"}
    made(server.admin("POST", "/admin/tools/providers", json={**pets, "tenant": TENANT_A}))
    made(
        server.admin(
            "PUT", "/admin/budgets", json={"tenant": TENANT_A, "period": "month", "tokens": 987_654}
        ),
        200,
    )
    made(server.admin("PUT", "/admin/limits", json={"tenant": TENANT_A, "rpm": 100_000}), 200)

    spec = {
        "name": AGENT,
        "description": f"{SECRET} watches the harbour",
        "instructions": f"{SECRET}: tell the owner.",
        "model": "mock",
        "tools": ["notify.owner", f"{PETS}.*"],
        "approval": ["notify.owner"],
        "triggers": [{"kind": "webhook"}, {"kind": "interval", "every_s": 86_400, "input": f"{SECRET} tick"}],
    }
    secret = made(call(server, key_a, "POST", "/v1/agents", json=spec))["webhook_secret"]
    made(call(server, key_a, "POST", "/v1/agents", json={**spec, "instructions": f"{SECRET}: v2."}))

    chat = call(server, key_a, "POST", "/v1/chat/completions", json=mock_chat(f"{SECRET} question"))
    assert chat.status_code == 200, chat.text
    completion = chat.headers["x-request-id"]

    upstream.script[:] = [notify_call(f"{SECRET} note"), {"role": "assistant", "content": f"{SECRET} done"}]
    done_pid = made(
        call(server, key_a, "POST", "/v1/processes", json={"agent": AGENT, "input": f"{SECRET} one"})
    )["pid"]
    wait_state(server, key_a, done_pid, ("waiting_approval",))
    (first,) = made(call(server, key_a, "GET", "/v1/approvals"), 200)["data"]
    made(call(server, key_a, "POST", f"/v1/approvals/{first['id']}/approve"), 200)
    assert wait_state(server, key_a, done_pid, ("done", "failed"))["state"] == "done"

    upstream.script[:] = [notify_call(f"{SECRET} second note")]
    waiting_pid = made(
        call(server, key_a, "POST", "/v1/processes", json={"agent": AGENT, "input": f"{SECRET} two"})
    )["pid"]
    wait_state(server, key_a, waiting_pid, ("waiting_approval",))
    (approval,) = made(call(server, key_a, "GET", "/v1/approvals"), 200)["data"]

    upstream.script[:] = [{"role": "assistant", "content": f"{SECRET} webhook answer"}]
    hook = call(server, secret, "POST", f"/v1/agents/{AGENT}/trigger", content=f"{SECRET} hook".encode())
    webhook_pid = made(hook, 202)["pid"]
    wait_state(server, key_a, webhook_pid, ("done", "failed"))

    memory = made(
        call(server, key_a, "POST", "/v1/memory", json={"text": f"{SECRET} harbour code", "key": MEMORY_KEY})
    )["id"]
    entry = made(
        call(
            server,
            key_a,
            "POST",
            "/v1/entry",
            json={"input": f"buy the cheapest cast iron pan {SECRET}", "user": "alice", "plan": shop_plan()},
        ),
        200,
    )
    assert entry["state"] == "awaiting_confirmation", entry
    made(
        call(
            server, key_a, "POST", "/v1/feedback", json={"process": done_pid, "rating": 1, "comment": SECRET}
        )
    )
    run = made(
        call(server, key_a, "POST", "/v1/learn/evals", json={"suite": "compiler", "limit": 1, "wait": 60}),
        200,
    )
    traces = tuple(t["id"] for t in made(call(server, key_a, "GET", "/v1/traces"), 200)["data"])
    examples = tuple(e["id"] for e in made(call(server, key_a, "GET", "/v1/learn/memory"), 200)["data"])
    assert traces and examples, "A has traces and experience examples"
    dataset = made(server.admin("POST", "/v1/learn/datasets", json={"kind": "compiler", "tenant": TENANT_A}))[
        "id"
    ]
    return Owned(
        key_a=key_a,
        key_b=key_b,
        key_c=key_c,
        key_a_id=key_a_id,
        webhook_secret=secret,
        done_pid=done_pid,
        waiting_pid=waiting_pid,
        webhook_pid=webhook_pid,
        approval=approval["id"],
        entry=entry["id"],
        memory=memory,
        completion=completion,
        eval_run=run["id"],
        traces=traces,
        examples=examples,
        dataset=dataset,
    )


def a_as_it_is(server: LiveServer, o: Owned) -> dict[str, Any]:
    """Everything of tenant A's, read with A's key and the admin key."""
    reads = [
        "/v1/agents",
        f"/v1/agents/{AGENT}/versions",
        f"/v1/agents/{AGENT}/triggers",
        "/v1/processes",
        *(f"/v1/processes/{pid}/journal" for pid in o.pids),
        "/v1/approvals",
        "/v1/audit",
        "/v1/inbox",
        "/v1/memory",
        "/v1/entry",
        f"/v1/entry/{o.entry}",
        "/v1/feedback",
        "/v1/traces",
        "/v1/learn/memory",
        "/v1/learn/evals",
        "/v1/budgets",
        "/v1/me",
        "/v1/tools",
        "/v1/services",
        "/v1/usage?group_by=agent,process,key",
    ]
    seen: dict[str, Any] = {}
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {o.key_a}"}, timeout=60) as a:
        for path in reads:
            answer = a.get(path)
            assert answer.status_code == 200, (path, answer.text)
            seen[path] = answer.json()
    for path in (
        f"/admin/keys?tenant={TENANT_A}",
        f"/admin/limits?tenant={TENANT_A}",
        f"/admin/tenants/{TENANT_A}/users",
        "/admin/tenants",
        "/admin/tools/providers",
        f"/v1/learn/datasets/{o.dataset}",
    ):
        answer = server.admin("GET", path)
        assert answer.status_code == 200, (path, answer.text)
        seen[path] = answer.json()
    # A's webhook secret still starts A's agent (asked for another agent, it says whose it is).
    hook = httpx.post(
        f"{server.url}/v1/agents/not-{AGENT}/trigger",
        headers={"Authorization": f"Bearer {o.webhook_secret}"},
        timeout=60,
    )
    seen["webhook secret"] = (hook.status_code, hook.json())
    return seen


@pytest.fixture(scope="module")
def before(server: LiveServer, owned: Owned) -> dict[str, Any]:
    """A's things before B's walk, read twice to be sure they hold still."""
    first = a_as_it_is(server, owned)
    assert a_as_it_is(server, owned) == first, "A's things change with no one calling"
    return first


# -- the checks -------------------------------------------------------------------------------------------


def problems_with(answer: httpx.Response, ask: Ask, case: Case, owned: Owned) -> list[str]:
    """What is wrong with one answer to B: a leak, or a refusal not in the API's error shape."""
    wrong: list[str] = []
    status = answer.status_code
    if case.category == "admin" and status not in ADMIN_REFUSALS:
        wrong.append(f"an admin route answered {status} to a tenant key")
    elif case.category == "public" and 300 <= status < 400:
        pass  # a redirect to the console's page
    elif not (200 <= status < 300 or status in REFUSALS):
        wrong.append(f"answered {status}, neither a success nor a refusal")
    if status >= 400:
        try:
            error = answer.json()["error"]
            assert isinstance(error["message"], str) and isinstance(error["type"], str)
        except (ValueError, KeyError, TypeError, AssertionError):
            wrong.append(f"a refusal not in the OpenAI error shape: {answer.text[:200]}")
    sent = ask.text()
    text = answer.text
    leaked = sorted(h for h in {SECRET, *owned.handles()} if h in text and h not in sent)
    if leaked:
        wrong.append(f"holds A's {leaked}: {text[:300]}")
    return wrong


def test_every_route_the_app_serves_has_an_isolation_case(tmp_path: Path) -> None:
    served = app_routes(tmp_path)
    missing = sorted(served - ROUTES.keys())
    stale = sorted(ROUTES.keys() - served)
    assert not missing, (
        f"routes with no case in ROUTES (say how tenant B aims at tenant A's there): {missing}"
    )
    assert not stale, f"cases in ROUTES for routes the app no longer serves: {stale}"
    undescribed = sorted(k for k, case in ROUTES.items() if case.category == "public" and not case.why)
    assert not undescribed, f"public routes must say why no tenant's things are behind them: {undescribed}"


@pytest.mark.parametrize("route", list(ROUTES), ids=[f"{m} {p}" for m, p in ROUTES])
def test_a_second_tenants_key_reads_and_changes_nothing_of_the_first_tenants(
    server: LiveServer, owned: Owned, before: dict[str, Any], route: tuple[str, str]
) -> None:
    case = ROUTES[route]
    asks = case.asks(owned)
    assert asks, f"{route} has no request to walk"
    wrong: list[str] = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for ask in asks:
            assert SECRET not in ask.text(), "the other tenants never send A's secret word"
            key = owned.key_c if ask.keeps else owned.key_b
            answer = client.request(
                ask.method,
                ask.path,
                params=ask.params,
                json=ask.body,
                content=ask.content,
                headers={"Authorization": f"Bearer {key}", **ask.headers},
            )
            wrong += [
                f"{ask.method} {ask.path} {ask.params or ''}: {p}"
                for p in problems_with(answer, ask, case, owned)
            ]
    after = a_as_it_is(server, owned)
    changed = sorted(path for path in before if after[path] != before[path])
    wrong += [f"A's {path} changed: {before[path]} -> {after[path]}" for path in changed]
    assert not wrong, "\n".join(wrong)
