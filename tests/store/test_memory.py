"""Memory: kept across processes, found by words, replaced by key, one tenant's alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigrid.store.accounts import AccountError, AccountStore
from aigrid.store.db import make_engine, migrate
from aigrid.store.memory import TENANT_WIDE, MemoryStore


def stores(tmp_path: Path) -> tuple[MemoryStore, int, int]:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    accounts = AccountStore(engine)
    return MemoryStore(engine), accounts.ensure_tenant("acme"), accounts.ensure_tenant("globex")


def test_search_finds_by_any_word_best_match_first(tmp_path: Path) -> None:
    memory, acme, _ = stores(tmp_path)
    memory.write(acme, "shopper", "The customer prefers brass lamps with warm light.")
    memory.write(acme, "shopper", "Deliveries go to the back door on Fridays.")
    memory.write(acme, "shopper", "Lamps from Globex broke twice; lamps from Initech did not.")
    found = memory.search(acme, "which lamps", ["shopper"])
    assert found[0].text.startswith("Lamps from Globex"), "two matches of 'lamps' rank first"
    assert len(found) == 2
    assert memory.search(acme, "lamp", ["shopper"]), "words are stemmed: lamp finds lamps"


def test_search_syntax_in_a_query_is_only_words(tmp_path: Path) -> None:
    memory, acme, _ = stores(tmp_path)
    memory.write(acme, "shopper", "Budget is 40 euros")
    for query in ['budget" OR *', "NEAR(budget)", "budget AND", "(", '"']:
        found = memory.search(acme, query, ["shopper"])
        assert all("Budget" in m.text for m in found), query
    assert memory.search(acme, "   ", ["shopper"]) == []


def test_a_key_holds_one_memory_and_writing_it_again_replaces_it(tmp_path: Path) -> None:
    memory, acme, _ = stores(tmp_path)
    first = memory.write(acme, "shopper", "size M", key="shirt size")
    second = memory.write(acme, "shopper", "size L", key="shirt size")
    assert first.id == second.id
    read = memory.read(acme, ["shopper", TENANT_WIDE], "shirt size")
    assert read is not None and read.text == "size L"
    assert [m.text for m in memory.search(acme, "size", ["shopper"])] == ["size L"]


def test_an_agents_memory_comes_before_the_shared_one_and_others_see_only_the_shared(tmp_path: Path) -> None:
    memory, acme, _ = stores(tmp_path)
    memory.write(acme, TENANT_WIDE, "ship to Berlin", key="address")
    memory.write(acme, "shopper", "ship to Paris", key="address")
    shopper = memory.read(acme, ["shopper", TENANT_WIDE], "address")
    writer = memory.read(acme, ["writer", TENANT_WIDE], "address")
    assert shopper is not None and shopper.text == "ship to Paris"
    assert writer is not None and writer.text == "ship to Berlin"
    assert [m.text for m in memory.search(acme, "ship", ["writer", TENANT_WIDE])] == ["ship to Berlin"]


def test_a_tenant_never_finds_another_tenants_memory(tmp_path: Path) -> None:
    memory, acme, globex = stores(tmp_path)
    secret = memory.write(acme, TENANT_WIDE, "the vault code is 1234", key="vault")
    assert memory.search(globex, "vault code", None) == []
    assert memory.read(globex, [TENANT_WIDE], "vault") is None
    with pytest.raises(AccountError) as info:
        memory.forget(globex, secret.id)
    assert info.value.status == 404
    memory.forget(acme, secret.id)
    assert memory.search(acme, "vault", None) == [], "a forgotten memory leaves the index too"


def test_bad_memories_are_refused(tmp_path: Path) -> None:
    memory, acme, _ = stores(tmp_path)
    for text, key in (("  ", None), ("x" * 20_001, None), ("fine", "")):
        with pytest.raises(AccountError) as info:
            memory.write(acme, "shopper", text, key)
        assert info.value.status == 400
