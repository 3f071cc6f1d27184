"""A fake aigrid server behind httpx.MockTransport, and the environment the CLI tests run in."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from aigrid.cli import client, common, main

ADMIN_KEY = "admin-secret"
URL = "http://aigrid.test"


@dataclass
class FakeServer:
    """Answers canned JSON per (method, path) and records every request it receives."""

    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def answer(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.answers[(method, path)] = (status, body)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.answers.get(
            (request.method, request.url.path),
            (404, {"error": {"message": "Not found.", "type": "invalid_request_error", "param": None}}),
        )
        return httpx.Response(status, json=body)

    @property
    def last(self) -> httpx.Request:
        assert self.requests, "the CLI sent no request"
        return self.requests[-1]

    def last_body(self) -> Any:
        return json.loads(self.last.content)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIGRID_URL", URL)
    monkeypatch.setenv("AIGRID_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("AIGRID_DATA_DIR", str(tmp_path / "no-data-dir"))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    server = FakeServer()
    transport = httpx.MockTransport(server.handle)
    monkeypatch.setattr(common, "connect", functools.partial(client.connect, transport=transport))
    return server


def run(*args: str) -> Result:
    return CliRunner().invoke(main.app, list(args))


def budget_row(kind: str, limit: int, spent: int) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "kind": kind,
        "period": "month",
        "limit": limit,
        "spent": spent,
        "reserved": 0,
        "remaining": limit - spent,
        "period_start_us": 1_700_000_000_000_000,
    }


def usage_row(tenant: str, model: str, prompt: int, completion: int, cost_micro: int) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "model": model,
        "requests": 3,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": 0,
        "total_tokens": prompt + completion,
        "cost_micro": cost_micro,
        "cost": f"{cost_micro / 1e6:.6f}",
    }


def usage_answer(rows: list[dict[str, Any]], group_by: list[str]) -> dict[str, Any]:
    sums = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens", "cost_micro")
    totals: dict[str, Any] = {s: sum(r[s] for r in rows) for s in sums}
    totals["cost"] = f"{totals['cost_micro'] / 1e6:.6f}"
    return {"object": "list", "group_by": group_by, "interval": None, "data": rows, "totals": totals}
