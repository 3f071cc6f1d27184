"""Schemathesis over every operation of the OpenAPI document, against a live server.

The server's models are a mock upstream defined here (chat, completions and embeddings answer at
once), so the operations that are slow on the embedded model (chat, planning an entry, compiling an
agent, evals, training rounds) are covered at the speed of the rest. A tenant with an agent is made
first so that the tenant key's calls reach real objects; admin operations use the admin key.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support import ADMIN_KEY, LiveServer, mock_config

pytestmark = pytest.mark.slow

# Generation is deterministic (the same cases every run); the seed fixes the rest of Hypothesis.
SEED = 20261207
EXAMPLES = 12
# Operations that start background work (runs of every task of a suite, training rounds, provider
# processes): fewer examples each, so the run stays within its time.
FEW_EXAMPLES = 3
HEAVY = [
    ("POST", "/v1/learn/evals"),
    ("POST", "/v1/learn/memory/teach"),
    ("POST", "/v1/learn/rounds"),
    ("POST", "/v1/learn/models"),
    ("POST", "/admin/tools/providers"),
    ("POST", "/admin/services"),
    ("POST", "/v1/entry"),
    ("POST", "/v1/agents"),
    ("POST", "/v1/agents/{name}/edit"),
]
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
]
# Operations that cannot run here, with why; each is still in the document. None at present.
NOT_RUN: dict[tuple[str, str], str] = {}
# The mock answers as `local` too: the name the document's examples use (the embedded model's alias).
SERVER_CONFIG = """
[kernel]
planner_model = "mock"
compiler_model = "mock"
agent_model = "mock"
[learn]
embedding_model = "mock"
"""
TENANT = "acme"
AGENT = {
    "name": "helper",
    "instructions": "Answer briefly.",
    "model": "mock",
    "triggers": [{"kind": "webhook"}],
}


class MockModels:
    """A mock OpenAI upstream: chat (JSON or SSE), text completions and embeddings, answered at once."""

    def __init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                status, ctype, data = outer.answer(self.path, body if isinstance(body, dict) else {})
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
        """The status, content type and body answering one request."""
        model = str(body.get("model", "mock"))
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        base = {"id": "cmpl-mock", "created": 0, "model": model}
        if path.endswith("/embeddings"):
            inputs = body.get("input")
            count = len(inputs) if isinstance(inputs, list) else 1
            vector = [0.5] * 8
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack("<8f", *vector)).decode()
            data = [{"object": "embedding", "index": i, "embedding": encoded} for i in range(count)]
            reply = {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
            return 200, "application/json", json.dumps(reply).encode()
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            choice = {"index": 0, "text": "hi", "finish_reason": "stop", "logprobs": None}
            kind, chunk_kind = "text_completion", "text_completion"
            delta: dict[str, Any] = {"index": 0, "text": "hi", "finish_reason": "stop"}
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            kind, chunk_kind = "chat.completion", "chat.completion.chunk"
            delta = {"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        if body.get("stream"):
            events = [{**base, "object": chunk_kind, "choices": [delta]}]
            events.append({**base, "object": chunk_kind, "choices": [], "usage": usage})
            frames = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            return 200, "text/event-stream", frames.encode()
        reply = {**base, "object": kind, "choices": [choice], "usage": usage}
        return 200, "application/json", json.dumps(reply).encode()

    def stop(self) -> None:
        """Shut the mock down."""
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A server on the mock models, with tenant ``acme``, its key and its agent ``helper``."""
    models = MockModels()
    config = mock_config(models.url, extra=SERVER_CONFIG).replace(
        'name = "mock"', 'name = "mock"\naliases = ["local"]'
    )
    srv = LiveServer(tmp_path_factory.mktemp("schemathesis"), config)
    srv.start()
    try:
        key = srv.new_tenant_key(TENANT)
        auth = {"Authorization": f"Bearer {key}"}
        saved = httpx.post(srv.url + "/v1/agents", json=AGENT, headers=auth)
        assert saved.status_code == 201, saved.text
        # Things of the tenant's for the run to find in listings and reach by their ids.
        for path, body in [
            ("/v1/processes", {"agent": AGENT["name"], "input": "Say hi."}),
            ("/v1/memory", {"text": "Ship to Berlin.", "key": "address"}),
            ("/v1/entry", {"input": "buy a lamp", "wait": 5}),
        ]:
            made = httpx.post(srv.url + path, json=body, headers=auth, timeout=30)
            assert made.status_code in (200, 201), made.text
        yield srv, key
    finally:
        srv.stop()
        models.stop()


def _config(url: str, tenant_key: str) -> str:
    lines = [
        f'base-url = "{url}"',
        f"seed = {SEED}",
        # One worker: Python 3.11's ast.parse, which Hypothesis calls, is not safe across threads.
        "workers = 1",
        "request-timeout = 60",
        "[generation]",
        f"max-examples = {EXAMPLES}",
        "deterministic = true",
        "[checks]",
        "enabled = false",
        *(f"{check}.enabled = true" for check in CHECKS),
        "[auth.openapi.TenantKey]",
        f'bearer = "{tenant_key}"',
        "[auth.openapi.AdminKey]",
        f'bearer = "{ADMIN_KEY}"',
    ]
    for method, path in HEAVY:
        lines += [
            "[[operations]]",
            f'include-method = "{method}"',
            f'include-path = "{path}"',
            f"generation.max-examples = {FEW_EXAMPLES}",
        ]
    # Revoking a key the run read from GET /admin/keys would lock the tenant key out of the rest.
    lines += [
        "[[operations]]",
        'include-method = "DELETE"',
        'include-path = "/admin/keys/{key_id}"',
        "phases.coverage.extra-data-sources.responses = false",
        "phases.fuzzing.extra-data-sources.responses = false",
    ]
    for method, path in NOT_RUN:
        lines += [
            "[[operations]]",
            f'include-method = "{method}"',
            f'include-path = "{path}"',
            "enabled = false",
        ]
    return "\n".join(lines) + "\n"


def test_every_operation_holds_to_the_document(live: tuple[LiveServer, str], tmp_path: Path) -> None:
    """No server errors, and every answer is one the document allows, in status, type, body and headers."""
    srv, key = live
    document = httpx.get(srv.url + "/openapi.json").json()
    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(srv.url, key))
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            srv.url + "/openapi.json",
            "--phases",
            "examples,coverage,fuzzing",
            "--suppress-health-check",
            "all",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,  # where its cache goes
    )
    took = time.monotonic() - started
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis failed after {took:.0f}s:\n{out[-20000:]}\n{srv.log()[-5000:]}"
    tested = re.search(r"Tested:\s+(\d+)", out)
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert tested is not None and cases is not None, out[-5000:]
    assert int(tested.group(1)) == len(operations) - len(NOT_RUN), out[-5000:]
    assert cases.group(1) == cases.group(2), out[-5000:]
    print(f"schemathesis: {tested.group(1)} operations, {cases.group(1)} cases, 0 failures, {took:.0f}s")
