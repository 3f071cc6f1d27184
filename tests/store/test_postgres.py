"""The grid on PostgreSQL: a real server started for the test (see tests/postgres.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from tests.postgres import Postgres
from tests.support import LiveServer, mock_config

from aigrid.store.db import make_engine, migrate

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres_url(postgres: Postgres) -> str:
    return postgres.new_database()


def test_the_grid_meters_into_postgresql_and_survives_a_kill(
    postgres_url: str, mock_upstream: str, tmp_path: Path
) -> None:
    config = mock_config(
        mock_upstream, input_price="1", output_price="2", extra=f'database_url = "{postgres_url}"'
    )
    server = LiveServer(tmp_path, config).start()
    key = server.new_tenant_key("pg")
    assert server.admin(
        "PUT", "/admin/budgets", json={"tenant": "pg", "period": "day", "tokens": 10_000}
    ).is_success
    client = server.openai(key)
    for _ in range(3):
        client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
    stream = client.chat.completions.create(
        model="mock", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert list(stream)
    server.kill()
    server.start()
    try:
        usage = server.admin("GET", "/v1/usage", params={"tenant": "pg", "group_by": "model"}).json()
        assert usage["totals"]["requests"] == 4 and usage["totals"]["total_tokens"] == 4 * 28
        assert usage["totals"]["cost_micro"] == 4 * (12 + 32)
        budget = server.admin("GET", "/admin/budgets", params={"tenant": "pg"}).json()["data"][0]
        assert budget["spent"] == 4 * 28
    finally:
        server.stop()


def test_memory_search_and_the_journal_work_on_postgresql(postgres_url: str) -> None:
    from aigrid.spec import AgentSpec
    from aigrid.store.accounts import AccountStore
    from aigrid.store.agents import AgentStore
    from aigrid.store.db import make_engine, migrate
    from aigrid.store.memory import TENANT_WIDE, MemoryStore
    from aigrid.store.processes import ProcessStore, StepUsage

    engine = make_engine(postgres_url)
    migrate(engine)
    accounts = AccountStore(engine)
    acme, globex = accounts.ensure_tenant("mem-acme"), accounts.ensure_tenant("mem-globex")
    memory = MemoryStore(engine)
    memory.write(acme, "shopper", "The customer prefers brass lamps.")
    memory.write(acme, TENANT_WIDE, "Deliveries go to the back door.", key="door")
    found = memory.search(acme, "which lamp?", ["shopper", TENANT_WIDE])
    assert [m.text for m in found] == ["The customer prefers brass lamps."], "stemmed: lamp finds lamps"
    assert memory.search(globex, "lamps", None) == []
    assert memory.search(acme, 'door" | !', None)[0].key == "door"

    stored, _ = AgentStore(engine).save(acme, AgentSpec(name="shopper", instructions="Shop."))
    processes = ProcessStore(engine)
    pid = processes.create(acme, stored, "go").pid
    processes.set_state(pid, "running", expect={"ready"})
    processes.append(
        pid, "model_request", {"messages": 2}, StepUsage(10, 2, 1), after=[("model_response", {})]
    )
    record, steps = processes.get(pid), processes.journal(pid)
    assert (record.steps, record.prompt_tokens, [s.seq for s in steps]) == (2, 10, [1, 2])
    done = processes.append(pid, "model_response", {"message": {}}, state="done", result="a lamp")
    assert (done.state, done.result, done.steps) == ("done", "a lamp", 3)
    child = processes.create(acme, stored, "help", pid, spawn_key=f"{pid}:3")
    assert processes.create(acme, stored, "help", pid, spawn_key=f"{pid}:3").pid == child.pid
    assert AgentStore(engine).get(acme, "shopper").version == 1
    engine.dispose()


def test_servers_started_together_on_an_empty_database_migrate_it_once(postgres_url: str) -> None:
    engines = [make_engine(postgres_url) for _ in range(4)]
    failures: list[BaseException] = []

    def start(engine: Engine) -> None:
        try:
            migrate(engine)
        except BaseException as exc:  # reported below, with the thread's own error
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not failures, f"a concurrent migration failed: {failures[0]!r}"
        with engines[0].connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert len(versions) == 1
    finally:
        for e in engines:
            e.dispose()
