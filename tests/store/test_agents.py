"""Agent specs in the database: versions, the newest of each agent, and tenants kept apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigrid.spec import AgentSpec
from aigrid.store.accounts import AccountError, AccountStore
from aigrid.store.agents import AgentStore
from aigrid.store.db import make_engine, migrate


@pytest.fixture
def stores(tmp_path: Path) -> tuple[AccountStore, AgentStore]:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(engine)
    return AccountStore(engine), AgentStore(engine)


def spec(name: str = "shopper", **extra: object) -> AgentSpec:
    return AgentSpec.model_validate({"name": name, "instructions": "Buy cheap.", **extra})


def test_each_change_is_a_new_version_and_an_unchanged_save_is_not(
    stores: tuple[AccountStore, AgentStore],
) -> None:
    accounts, agents = stores
    acme = accounts.ensure_tenant("acme")
    first, added = agents.save(acme, spec())
    assert (first.version, added) == (1, True)
    same, added = agents.save(acme, spec())
    assert (same.version, added) == (1, False)
    second, added = agents.save(acme, spec(tools=["shop.*"]))
    assert (second.version, added) == (2, True)
    assert agents.get(acme, "shopper").spec.tools == ("shop.*",)
    assert agents.get(acme, "shopper", 1).spec.tools == ()
    assert [v.version for v in agents.versions(acme, "shopper")] == [1, 2]


def test_a_version_saved_by_another_server_is_the_newest_at_once(
    stores: tuple[AccountStore, AgentStore], tmp_path: Path
) -> None:
    accounts, agents = stores
    acme = accounts.ensure_tenant("acme")
    agents.save(acme, spec())
    assert agents.get(acme, "shopper").version == 1
    other_server = AgentStore(make_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    other_server.save(acme, spec(max_steps=3))
    newest = agents.get(acme, "shopper")
    assert (newest.version, newest.spec.max_steps) == (2, 3)
    assert agents.get(acme, "shopper", 1).spec.max_steps != 3


def test_tenants_see_only_their_own_agents(stores: tuple[AccountStore, AgentStore]) -> None:
    accounts, agents = stores
    acme, globex = accounts.ensure_tenant("acme"), accounts.ensure_tenant("globex")
    agents.save(acme, spec("shopper"))
    agents.save(acme, spec("shopper", max_steps=5))
    agents.save(acme, spec("writer"))
    agents.save(globex, spec("shopper"))
    assert [(s.spec.name, s.version) for s in agents.newest(acme)] == [("shopper", 2), ("writer", 1)]
    assert [(s.spec.name, s.version) for s in agents.newest(globex)] == [("shopper", 1)]
    assert len(agents.newest()) == 3
    with pytest.raises(AccountError) as info:
        agents.get(globex, "writer")
    assert info.value.status == 404


def test_missing_agents_and_versions_are_404(stores: tuple[AccountStore, AgentStore]) -> None:
    accounts, agents = stores
    acme = accounts.ensure_tenant("acme")
    agents.save(acme, spec())
    for call in (
        lambda: agents.get(acme, "nobody"),
        lambda: agents.get(acme, "shopper", 9),
        lambda: agents.versions(acme, "nobody"),
    ):
        with pytest.raises(AccountError) as info:
            call()
        assert info.value.status == 404
