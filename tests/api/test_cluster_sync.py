"""Keys, budgets and rate limits changed through one server are in force on its peer within the
stated bound: two aigrid servers on one real PostgreSQL."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from tests.postgres import Postgres
from tests.support import LiveServer, mock_config

pytestmark = pytest.mark.slow

STDIO_SERVER = Path(__file__).parent.parent / "kernel" / "mcp_stdio_server.py"
SYNC_S = 0.5
# The documented bound (sync_s plus one poll), with room for a loaded test machine.
BOUND_S = 2 * SYNC_S + 2.0


def _config(upstream: str, database_url: str, node: str) -> str:
    cluster = f'[cluster]\nnode = "{node}"\nlease_s = 3\nrenew_s = 0.5\nsync_s = {SYNC_S}\n'
    return mock_config(upstream, extra=f'database_url = "{database_url}"\n{cluster}')


@pytest.fixture(scope="module")
def database(postgres: Postgres) -> str:
    """One fresh database for the module's pair of servers."""
    return postgres.new_database()


@pytest.fixture(scope="module")
def pair(
    database: str, mock_upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two servers, alpha and beta, on one fresh database."""
    root = tmp_path_factory.mktemp("sync")
    alpha = LiveServer(root / "a", _config(mock_upstream, database, "alpha")).start()
    beta = LiveServer(root / "b", _config(mock_upstream, database, "beta"))
    try:
        beta.start()
        yield alpha, beta
    finally:
        beta.stop()
        alpha.stop()


def _ask(server: LiveServer, key: str) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
        timeout=10,
    )


def _within_bound(check: Callable[[], bool], what: str, extra_s: float = 0.0) -> float:
    """Seconds until ``check`` holds; fails past the bound (plus ``extra_s``)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > BOUND_S + extra_s:
            raise AssertionError(f"not within {BOUND_S + extra_s} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def _tenant_key(server: LiveServer, tenant: str) -> tuple[str, str]:
    assert server.admin("POST", "/admin/tenants", json={"name": tenant}).status_code == 201
    made = server.admin("POST", "/admin/keys", json={"tenant": tenant})
    assert made.status_code == 201, made.text
    return made.json()["id"], made.json()["key"]


def test_a_key_made_on_one_server_works_on_the_other_and_its_revocation_too(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    alpha, beta = pair
    key_id, key = _tenant_key(alpha, "keys-t")
    assert _ask(alpha, key).status_code == 200
    _within_bound(lambda: _ask(beta, key).status_code == 200, "beta accepts a key made on alpha")

    assert alpha.admin("DELETE", f"/admin/keys/{key_id}").status_code == 200
    assert _ask(alpha, key).status_code == 401, "refused at once where it was revoked"
    _within_bound(lambda: _ask(beta, key).status_code == 401, "beta refuses a key revoked on alpha")
    time.sleep(2 * SYNC_S)
    assert _ask(beta, key).status_code == 401, "and stays refused"
    assert _ask(alpha, key).status_code == 401


def test_a_budget_set_on_one_server_is_enforced_on_the_other(pair: tuple[LiveServer, LiveServer]) -> None:
    alpha, beta = pair
    _, key = _tenant_key(alpha, "budget-t")
    _within_bound(lambda: _ask(beta, key).status_code == 200, "beta knows the key")
    # Smaller than one request's worst case: every request is over it.
    put = alpha.admin("PUT", "/admin/budgets", json={"tenant": "budget-t", "period": "day", "tokens": 5})
    assert put.status_code == 200, put.text
    _within_bound(lambda: _ask(beta, key).status_code == 429, "beta refuses a request over alpha's budget")
    assert beta.admin("GET", "/admin/cluster").json()["sync_s"] == SYNC_S
    refused = _ask(beta, key).json()["error"]
    assert refused["code"] == "insufficient_quota", refused
    shown = beta.admin("GET", "/admin/budgets", params={"tenant": "budget-t"}).json()["data"]
    assert [(b["kind"], b["period"], b["limit"]) for b in shown] == [("tokens", "day", 5)]

    removed = alpha.admin(
        "DELETE", "/admin/budgets", params={"tenant": "budget-t", "kind": "tokens", "period": "day"}
    )
    assert removed.status_code == 200, removed.text
    _within_bound(lambda: _ask(beta, key).status_code == 200, "beta drops a budget removed on alpha")


def test_a_rate_limit_set_on_one_server_is_enforced_on_the_other(pair: tuple[LiveServer, LiveServer]) -> None:
    alpha, beta = pair
    _, key = _tenant_key(alpha, "rate-t")
    _within_bound(lambda: _ask(beta, key).status_code == 200, "beta knows the key")
    put = alpha.admin("PUT", "/admin/limits", json={"tenant": "rate-t", "rpm": 1})
    assert put.status_code == 200, put.text
    # Once beta has the limit, its bucket of one request per minute is spent by one request.
    _within_bound(lambda: _ask(beta, key).status_code == 429, "beta enforces alpha's rpm")
    refused = _ask(beta, key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"

    assert alpha.admin("PUT", "/admin/limits", json={"tenant": "rate-t", "rpm": None}).status_code == 200
    _within_bound(lambda: _ask(beta, key).status_code == 200, "beta lifts a limit lifted on alpha")


def _providers(server: LiveServer) -> dict[str, str]:
    listing = server.admin("GET", "/admin/tools/providers")
    assert listing.status_code == 200, listing.text
    return {p["name"]: p["state"] for p in listing.json()["data"]}


def test_a_tool_provider_added_on_one_server_opens_on_the_other_and_closes_with_it(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    alpha, beta = pair
    body = {"name": "calc", "kind": "mcp", "command": [sys.executable, str(STDIO_SERVER)]}
    added = alpha.admin("POST", "/admin/tools/providers", json=body)
    assert added.status_code == 201, added.text
    # Opening it (a child process here) comes on top of the bound.
    _within_bound(lambda: _providers(beta).get("calc") == "up", "beta opens alpha's new provider", 10)
    assert alpha.admin("DELETE", "/admin/tools/providers/calc").status_code == 200
    _within_bound(lambda: "calc" not in _providers(beta), "beta closes a provider removed on alpha")


def _connections(postgres: Postgres, database: str, allowed: bool) -> None:
    """Let clients connect to ``database`` again, or turn them away and cut those connected."""
    with psycopg.connect(postgres.url().replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {'true' if allowed else 'false'}")
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,)
            )


def test_the_sync_outlives_the_database_going_away_and_catches_up(
    pair: tuple[LiveServer, LiveServer], postgres: Postgres, database: str
) -> None:
    alpha, beta = pair
    name = database.rsplit("/", 1)[1]
    _connections(postgres, name, allowed=False)
    try:
        time.sleep(4 * SYNC_S)  # several polls fail meanwhile
    finally:
        _connections(postgres, name, allowed=True)
    _, key = _tenant_key(alpha, "after-outage-t")
    _within_bound(lambda: _ask(beta, key).status_code == 200, "beta takes up changes after the outage")
    log = beta.log()
    assert "reading config changes from the database failed; retrying" in log
    assert "reading config changes from the database works again" in log
    assert beta.proc is not None and beta.proc.poll() is None, "the server is still running"
