"""Webhooks on a live server: a secret starts an agent; its result reaches the inbox and the owner's hook."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from tests.api.test_tools_api import api, wait_state
from tests.support import LiveServer, RecordingUpstream

pytestmark = pytest.mark.slow


def trigger(server: LiveServer, name: str, secret: str, body: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/agents/{name}/trigger",
        content=body,
        headers={"Authorization": f"Bearer {secret}", **headers},
        timeout=30,
    )


def inbox_until(server: LiveServer, key: str, done: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        messages: list[dict[str, Any]] = api(server, key, "GET", "/v1/inbox").json()["data"]
        if done(messages):
            return messages
        time.sleep(0.1)
    raise AssertionError(f"the inbox never got there: {messages}")


def test_a_webhook_with_the_agents_secret_starts_it_and_the_result_reaches_the_owner(
    server: LiveServer, upstream: RecordingUpstream
) -> None:
    key = server.new_tenant_key("acme")
    hook = RecordingUpstream()  # the owner's own endpoint; it answers 200
    try:
        spec = {
            "name": "watcher",
            "instructions": "Report the price.",
            "model": "mock",
            "triggers": [{"kind": "webhook"}],
            "webhook": f"{hook.url}/hook",
        }
        created = api(server, key, "POST", "/v1/agents", json=spec)
        assert created.status_code == 201, created.text
        secret = created.json()["webhook_secret"]
        again = api(server, key, "POST", "/v1/agents", json={**spec, "description": "v2"}).json()
        assert "webhook_secret" not in again, "the secret is shown once"
        upstream.script[:] = [{"role": "assistant", "content": "The monitor is 2,050 yuan."}]
        first = trigger(server, "watcher", secret, "price changed", **{"Idempotency-Key": "evt-1"})
        assert first.status_code == 202, first.text
        retried = trigger(server, "watcher", secret, "price changed", **{"Idempotency-Key": "evt-1"})
        assert retried.json()["pid"] == first.json()["pid"], "a retried delivery starts nothing new"
        pid = first.json()["pid"]
        assert wait_state(server, key, pid, ("done",))["input"].endswith("price changed")
        (message,) = inbox_until(server, key, lambda m: m and m[0]["delivery"]["delivered_at"])
        assert (message["kind"], message["pid"], message["text"]) == (
            "result",
            pid,
            "The monitor is 2,050 yuan.",
        )
        assert hook.requests[-1]["text"] == "The monitor is 2,050 yuan."
    finally:
        hook.stop()


def test_wrong_missing_and_rotated_secrets_are_refused(server: LiveServer) -> None:
    key = server.new_tenant_key("globex")
    for name in ("door", "bell"):
        spec = {"name": name, "instructions": "Open.", "model": "mock", "triggers": [{"kind": "webhook"}]}
        api(server, key, "POST", "/v1/agents", json=spec)
    api(server, key, "POST", "/v1/agents", json={"name": "quiet", "instructions": "Hush.", "model": "mock"})
    door = api(server, key, "POST", "/v1/agents/door/secret").json()["webhook_secret"]
    assert trigger(server, "door", "whs-not-the-secret", "x").status_code == 401
    assert trigger(server, "bell", door, "x").status_code == 403, "a secret starts its own agent only"
    assert trigger(server, "quiet", key, "x").status_code == 409, "no webhook trigger, no webhook"
    assert api(server, key, "POST", "/v1/agents/quiet/secret").status_code == 409
    assert trigger(server, "door", key, "by hand").status_code == 202, "the tenant's own key may trigger"
    rotated = api(server, key, "POST", "/v1/agents/door/secret").json()["webhook_secret"]
    assert trigger(server, "door", door, "x").status_code == 401, "the old secret stops working"
    assert trigger(server, "door", rotated, "x").status_code == 202
    refused = trigger(server, "door", rotated, "x", **{"Idempotency-Key": "k" * 41})
    assert refused.status_code == 400 and "Idempotency-Key" in refused.json()["error"]["message"]


def test_a_webhook_that_fails_is_tried_again_and_the_inbox_keeps_the_message(
    server: LiveServer, upstream: RecordingUpstream
) -> None:
    key = server.new_tenant_key("initech")
    broken = RecordingUpstream(status=500)
    try:
        spec = {
            "name": "reporter",
            "instructions": "Report.",
            "model": "mock",
            "triggers": [{"kind": "webhook"}],
            "webhook": broken.url,
        }
        api(server, key, "POST", "/v1/agents", json=spec)
        assert trigger(server, "reporter", key, "go").status_code == 202
        (message,) = inbox_until(
            server, key, lambda m: m and (m[0]["delivery"] or {}).get("attempts", 0) >= 2
        )
        assert message["delivery"]["delivered_at"] is None and message["delivery"]["error"] == "HTTP 500"
    finally:
        broken.stop()


def test_bad_triggers_are_refused_naming_the_field(server: LiveServer) -> None:
    key = server.new_tenant_key("hooli")
    for trigger, words in (
        ({"kind": "cron", "cron": "0 8 * *"}, "not a cron expression"),
        ({"kind": "cron", "cron": "0 8 * * *", "timezone": "Mars/Base"}, "not a known time zone"),
        ({"kind": "interval", "every_s": 0}, "greater than or equal to 1"),
        ({"kind": "once", "at": "2026-12-24T18:00:00"}, "timezone"),
        ({"kind": "interval", "every_s": 60, "missed": "sometimes"}, "run_once"),
        ({"kind": "sundial"}, "kind"),
    ):
        spec = {"name": "bad", "instructions": "x", "triggers": [trigger]}
        refused = api(server, key, "POST", "/v1/agents", json=spec)
        assert refused.status_code == 400, trigger
        assert words in refused.json()["error"]["message"] and refused.json()["error"]["param"].startswith(
            "triggers"
        )
    assert api(server, key, "GET", "/v1/agents").json()["data"] == []
