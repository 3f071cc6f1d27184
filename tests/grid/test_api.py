"""The gateway end to end: a live server, the official openai client, and upstream test doubles."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest
from tests.support import ADMIN_KEY, LiveServer, RecordingUpstream

from aigrid.grid.tokens import estimate_prompt_tokens

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "hello there"}]


def _deployment(
    url: str,
    *,
    name: str,
    timeout: float = 30,
    price_in: float = 0.8,
    price_out: float = 2.0,
    context: int = 131072,
) -> str:
    return f"""
[[models.deployments]]
backend = "openai"
name = "{name}"
base_url = "{url}"
upstream_model = "mock"
input_price_per_mtok = {price_in}
output_price_per_mtok = {price_out}
context_length = {context}
timeout_s = {timeout}
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    mock_upstream: str,
    slow_upstream: str,
    failing_upstream: RecordingUpstream,
    recording_upstream: RecordingUpstream,
    dead_url: str,
) -> Iterator[LiveServer]:
    config = "[breaker]\ncooldown_s = 30\n"
    config += '[[models]]\nname = "mock"\naliases = ["m"]\n' + _deployment(mock_upstream, name="mock-a")
    config += (
        '[[models]]\nname = "failover"\n'
        + _deployment(dead_url, name="dead")
        + _deployment(mock_upstream, name="backup")
    )
    config += (
        '[[models]]\nname = "flaky"\n'
        + _deployment(failing_upstream.url, name="failing")
        + _deployment(mock_upstream, name="steady")
    )
    config += (
        '[[models]]\nname = "slow"\n'
        + _deployment(slow_upstream, name="sluggish", timeout=0.3)
        + (_deployment(mock_upstream, name="quick"))
    )
    config += '[[models]]\nname = "down"\n' + _deployment(dead_url, name="nowhere")
    config += (
        '[[models]]\nname = "cheap"\npolicy = "cheapest"\n'
        + _deployment(mock_upstream, name="pricey", price_in=5, price_out=9)
        + _deployment(mock_upstream, name="bargain", price_in=0.1, price_out=0.2)
    )
    config += '[[models]]\nname = "echo"\n' + _deployment(recording_upstream.url, name="recorder")
    config += '[[models]]\nname = "tiny"\n' + _deployment(mock_upstream, name="tiny-ctx", context=64)
    srv = LiveServer(tmp_path_factory.mktemp("api"), config).start()
    yield srv
    srv.stop()


def _usage(server: LiveServer, **params: str) -> dict[str, object]:
    resp = server.admin("GET", "/v1/usage", params=params)
    assert resp.status_code == 200, resp.text
    data: dict[str, object] = resp.json()
    return data


def test_chat_through_the_official_client(server: LiveServer) -> None:
    reply = server.openai().chat.completions.create(model="mock", messages=MESSAGES, max_tokens=16)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.total_tokens == 28


def test_alias_routes_to_the_same_model(server: LiveServer) -> None:
    reply = server.openai().chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.choices[0].finish_reason == "stop"


def test_stream_hides_usage_unless_asked(server: LiveServer) -> None:
    client = server.openai()
    plain = list(client.chat.completions.create(model="mock", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert plain and all(chunk.usage is None for chunk in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices).strip()
    with_usage = list(
        client.chat.completions.create(
            model="mock",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens == 16


def test_models_are_listed(server: LiveServer) -> None:
    ids = {m.id for m in server.openai().models.list()}
    assert {"mock", "m", "failover", "cheap"} <= ids


def test_unknown_fields_pass_through_and_upstream_streams_carry_usage(
    server: LiveServer, recording_upstream: RecordingUpstream
) -> None:
    client = server.openai()
    client.chat.completions.create(
        model="echo",
        messages=MESSAGES,
        extra_body={"enable_thinking": False, "top_k": 5},  # type: ignore[arg-type]
    )
    sent = recording_upstream.requests[-1]
    assert sent["enable_thinking"] is False and sent["top_k"] == 5
    assert sent["model"] == "mock"
    chunks = list(client.chat.completions.create(model="echo", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert recording_upstream.requests[-1]["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)


def test_bad_key_is_401(server: LiveServer) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        server.openai("sk-wrong").chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.code == "invalid_api_key"


def test_unknown_model_is_404(server: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        server.openai().chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b'{"model": "mock"}', "messages"),
        (b'{"model": "mock", "messages": []}', "messages"),
        (b'{"model": "mock", "messages": ["hi"]}', "messages[0]"),
        (b'{"model": "mock", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (
            b'{"model": "mock", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
            "max_tokens",
        ),
        (
            b'{"model": "mock", "messages": [{"role": "user", "content": "x"}], "stream_options": {}}',
            "stream_options",
        ),
        (b"[1, 2]", None),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
    ],
)
def test_malformed_requests_are_400_naming_the_parameter(
    server: LiveServer, body: bytes, param: str | None
) -> None:
    resp = httpx.post(
        server.url + "/v1/chat/completions", content=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_context_length_exceeded(server: LiveServer) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        server.openai().chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "word " * 200}], max_tokens=10
        )
    assert err.value.code == "context_length_exceeded"


def test_failover_past_a_refused_connection_and_health_shows_it(server: LiveServer) -> None:
    reply = server.openai().chat.completions.create(model="failover", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    health = {d["name"]: d for d in server.admin("GET", "/admin/deployments").json()["data"]}
    assert health["dead"]["state"] == "open" and not health["dead"]["healthy"]
    assert "cannot reach" in health["dead"]["last_error"]
    assert health["backup"]["healthy"]
    # While the dead one cools down, requests go straight to the backup.
    server.openai().chat.completions.create(model="failover", messages=MESSAGES)  # type: ignore[arg-type]
    again = {d["name"]: d for d in server.admin("GET", "/admin/deployments").json()["data"]}
    assert again["dead"]["requests"] == health["dead"]["requests"]


def test_failover_past_a_5xx(server: LiveServer, failing_upstream: RecordingUpstream) -> None:
    before = len(failing_upstream.requests)
    reply = server.openai().chat.completions.create(model="flaky", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    assert len(failing_upstream.requests) == before + 1


def test_failover_past_a_timeout(server: LiveServer) -> None:
    reply = server.openai().chat.completions.create(model="slow", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    health = {d["name"]: d for d in server.admin("GET", "/admin/deployments").json()["data"]}
    assert not health["sluggish"]["healthy"] and "no data" in health["sluggish"]["last_error"]


def test_every_deployment_failing_is_502_then_503(server: LiveServer) -> None:
    client = server.openai()
    with pytest.raises(openai.APIStatusError) as first:
        client.chat.completions.create(model="down", messages=MESSAGES)  # type: ignore[arg-type]
    assert first.value.status_code == 502
    with pytest.raises(openai.APIStatusError) as second:
        client.chat.completions.create(model="down", messages=MESSAGES)  # type: ignore[arg-type]
    assert second.value.status_code == 503
    assert "cooling down" in second.value.message


def test_cheapest_policy_picks_the_cheaper_deployment(server: LiveServer) -> None:
    for _ in range(3):
        server.openai().chat.completions.create(model="cheap", messages=MESSAGES)  # type: ignore[arg-type]
    rows = _usage(server, group_by="deployment")["data"]
    by_name = {r["deployment"]: r["requests"] for r in rows}  # type: ignore[union-attr,index]
    assert by_name.get("bargain", 0) >= 3 and "pricey" not in by_name


def test_tenant_keys_and_revocation(server: LiveServer) -> None:
    key = server.new_tenant_key("acme")
    server.openai(key).chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
    key_id = server.admin("GET", "/admin/keys", params={"tenant": "acme"}).json()["data"][0]["id"]
    assert server.admin("DELETE", f"/admin/keys/{key_id}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        server.openai(key).chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]


def test_tenant_key_cannot_use_admin_api_or_see_others_usage(server: LiveServer) -> None:
    key = server.new_tenant_key("nosy")
    headers = {"Authorization": f"Bearer {key}"}
    denied = httpx.get(server.url + "/admin/tenants", headers=headers)
    assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"
    server.openai(key).chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
    own = httpx.get(server.url + "/v1/usage", params={"group_by": "tenant"}, headers=headers).json()
    assert [r["tenant"] for r in own["data"]] == ["nosy"]
    other = httpx.get(server.url + "/v1/usage", params={"tenant": "admin"}, headers=headers)
    assert other.status_code == 403


def test_rate_limit_is_429_with_retry_after(server: LiveServer) -> None:
    key = server.new_tenant_key("hasty")
    assert server.admin("PUT", "/admin/limits", json={"tenant": "hasty", "rpm": 2}).status_code == 200
    client = server.openai(key)
    for _ in range(2):
        client.chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.code == "rate_limit_exceeded"
    assert int(err.value.response.headers["retry-after"]) >= 1


def test_token_rate_limit_counts_the_request_worst_case(server: LiveServer) -> None:
    key = server.new_tenant_key("wordy")
    server.admin("PUT", "/admin/limits", json={"tenant": "wordy", "tpm": 100})
    with pytest.raises(openai.RateLimitError):
        server.openai(key).chat.completions.create(model="mock", messages=MESSAGES, max_tokens=500)  # type: ignore[arg-type]


def test_spent_budget_is_insufficient_quota(server: LiveServer) -> None:
    key = server.new_tenant_key("thrifty")
    resp = server.admin("PUT", "/admin/budgets", json={"tenant": "thrifty", "period": "day", "tokens": 80})
    assert resp.status_code == 200 and resp.json()["remaining"] == 80
    client = server.openai(key)
    client.chat.completions.create(model="mock", messages=MESSAGES, max_tokens=16)  # type: ignore[arg-type]
    client.chat.completions.create(model="mock", messages=MESSAGES, max_tokens=16)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="mock", messages=MESSAGES, max_tokens=16)  # type: ignore[arg-type]
    assert err.value.code == "insufficient_quota"
    budgets = server.admin("GET", "/admin/budgets", params={"tenant": "thrifty"}).json()["data"]
    assert budgets[0]["spent"] == 56


def test_concurrent_requests_do_not_overspend_a_budget(server: LiveServer) -> None:
    key = server.new_tenant_key("crowd")
    limit = 1000
    server.admin("PUT", "/admin/budgets", json={"tenant": "crowd", "period": "total", "tokens": limit})

    async def one(client: httpx.AsyncClient) -> int:
        resp = await client.post(
            "/v1/chat/completions", json={"model": "mock", "messages": MESSAGES, "max_tokens": 16}
        )
        return resp.status_code

    async def crowd() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=60
        ) as client:
            return await asyncio.gather(*(one(client) for _ in range(200)))

    codes = asyncio.run(crowd())
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
    spent = _usage(server, tenant="crowd")["totals"]["total_tokens"]  # type: ignore[index]
    reservation = 16 + estimate_prompt_tokens("chat", {"messages": MESSAGES})
    assert spent <= limit + reservation
    assert spent == 28 * codes.count(200)


def test_usage_series_and_bad_parameters(server: LiveServer) -> None:
    server.openai().chat.completions.create(
        model="mock",
        messages=MESSAGES,
        extra_headers={"X-Aigrid-Agent": "pricewatch"},  # type: ignore[arg-type]
    )
    series = _usage(server, group_by="tenant,model", interval="hour", since="2000-01-01")
    assert series["data"] and all("start" in row for row in series["data"])  # type: ignore[union-attr]
    totals = series["totals"]
    assert totals["requests"] == sum(r["requests"] for r in series["data"])  # type: ignore[index,union-attr]
    agents = {r["agent"] for r in _usage(server, group_by="agent")["data"]}  # type: ignore[union-attr,index]
    assert "pricewatch" in agents
    for params, param in (
        ({"group_by": "colour"}, "group_by"),
        ({"interval": "week"}, "interval"),
        ({"since": "yesterday-ish"}, "since"),
    ):
        resp = server.admin("GET", "/v1/usage", params=params)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param


def test_metrics_need_the_admin_key_and_count_tokens(server: LiveServer) -> None:
    assert httpx.get(server.url + "/metrics").status_code == 401
    server.openai().chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
    text = server.admin("GET", "/metrics").text
    assert 'aigrid_requests_total{model="mock",status="ok",tenant="admin"}' in text
    assert "aigrid_tokens_total" in text and "aigrid_deployment_healthy" in text
    assert "aigrid_request_seconds_bucket" in text


def test_admin_api_rejects_bad_bodies_in_the_openai_shape(server: LiveServer) -> None:
    resp = server.admin("PUT", "/admin/budgets", json={"tenant": "acme", "period": "week", "tokens": 5})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "period"
    both = server.admin(
        "PUT", "/admin/budgets", json={"tenant": "acme", "period": "day", "tokens": 5, "cost": "1"}
    )
    assert both.status_code == 400
    # Past what the database's columns hold: a clear 400 (PostgreSQL answered a 500 before).
    for path, body, param in [
        ("/admin/limits", {"tenant": "acme", "tpm": 10**12}, "tpm"),
        ("/admin/limits", {"tenant": "acme", "rpm": 2**31}, "rpm"),
        ("/admin/budgets", {"tenant": "acme", "period": "day", "tokens": 2**63}, "tokens"),
        ("/admin/budgets", {"tenant": "acme", "period": "day", "cost": "9" * 20}, None),
    ]:
        huge = server.admin("PUT", path, json=body)
        assert huge.status_code == 400, (body, huge.text)
        assert huge.json()["error"]["param"] == param, huge.text
    dup = server.admin("POST", "/admin/tenants", json={"name": "acme"})
    assert dup.status_code == 409
    missing = server.admin("GET", "/admin/nothing-here")
    assert missing.status_code == 404 and "error" in missing.json()


def test_oversized_bodies_and_headers_are_refused(server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    huge = b'{"model": "mock", "messages": [{"role": "user", "content": "' + b"x" * (33 * 2**20) + b'"}]}'
    resp = httpx.post(server.url + "/v1/chat/completions", content=huge, headers=headers, timeout=60)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"
    long_agent = {**headers, "X-Aigrid-Agent": "a" * 129}
    resp = httpx.post(
        server.url + "/v1/chat/completions", json={"model": "mock", "messages": MESSAGES}, headers=long_agent
    )
    assert resp.status_code == 400 and "x-aigrid-agent" in resp.json()["error"]["message"]
