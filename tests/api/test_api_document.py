"""The OpenAPI document: complete (every route the app serves), and what it says of auth and errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from tests.routes import app_routes

from aigrid.api.app import create_app
from aigrid.config import ServerConfig

# FastAPI's own pages for people: the document itself and the page that shows it.
THE_DOCUMENT = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect")}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document a server serves at /openapi.json."""
    served = create_app(ServerConfig(), tmp_path_factory.mktemp("openapi"))
    return served.app.openapi()


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m.upper(), p): op for p, item in document["paths"].items() for m, op in item.items()}


def test_the_document_lists_every_route_the_app_serves(document: dict[str, Any], tmp_path: Path) -> None:
    """A route added without a description fails here; so does a description of a route that is gone."""
    served = {(m, re.sub(r"{(\w+):\w+}", r"{\1}", p)) for m, p in app_routes(tmp_path)} - THE_DOCUMENT
    described = set(_operations(document))
    assert not sorted(served - described), f"routes the document lacks: {sorted(served - described)}"
    assert not sorted(described - served), f"operations no route serves: {sorted(described - served)}"


def test_every_error_answer_is_in_the_openai_shape(document: dict[str, Any]) -> None:
    """4xx and 5xx answers are all the one error object: {"error": {message, type, param, code}}."""
    for key, op in _operations(document).items():
        errors = {s: r for s, r in op["responses"].items() if s.startswith(("4", "5"))}
        for status, answer in errors.items():
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (key, status)
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"message", "type", "param", "code"}


def test_operations_say_which_keys_may_call_them(document: dict[str, Any]) -> None:
    """Tenant and admin keys are bearer schemes; admin operations take only the admin key."""
    schemes = document["components"]["securitySchemes"]
    assert {"TenantKey", "AdminKey", "WebhookSecret"} <= set(schemes)
    assert all(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    operations = _operations(document)
    for (method, path), op in operations.items():
        assert "security" in op, (method, path)
        if path.startswith("/admin/"):
            assert op["security"] == [{"AdminKey": []}], (method, path)
            assert {"401", "403"} <= set(op["responses"]), (method, path)
    assert operations[("GET", "/healthz")]["security"] == []
    assert operations[("POST", "/v1/chat/completions")]["security"] == [{"TenantKey": []}, {"AdminKey": []}]


def test_the_token_endpoints_are_described_without_going_through_fastapi(tmp_path: Path) -> None:
    """The hot path keeps its bare ASGI routes: the document describes them, FastAPI does not route them."""
    served = create_app(ServerConfig(), tmp_path)
    fastapi_paths = {getattr(r, "path", None) for r in served.app.routes}
    document = served.app.openapi()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        assert path not in fastapi_paths
        assert "post" in document["paths"][path]
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}


def test_budget_rule_is_in_the_schema(document: dict[str, Any]) -> None:
    """Exactly one of tokens or cost: the schema says it, as the server enforces it."""
    budget = document["components"]["schemas"]["BudgetIn"]
    assert len(budget["oneOf"]) == 2


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/admin/budgets", "DELETE, GET, PUT"),
        ("POST", "/console/app.js", "GET, HEAD"),
        ("POST", "/v1/processes/p-1/journal", "GET, HEAD"),
        ("DELETE", "/v1/learn/memory/teach", "POST"),
        ("GET", "/v1/chat/completions", "POST"),
    ],
)
def test_every_405_says_what_the_path_allows(tmp_path: Path, method: str, path: str, allow: str) -> None:
    """A method a path does not take is a 405 naming the ones it does, in the error shape."""
    client = TestClient(create_app(ServerConfig(), tmp_path))  # no lifespan: routing needs no state
    answer = client.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    assert answer.json()["error"]["code"] == "method_not_allowed"
