"""The experience memory: kept per tenant, found by meaning and by words, bounded, judged again."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigrid.errors import APIError
from aigrid.learn.experience import ExperienceMemory
from aigrid.store.accounts import AccountError, AccountStore
from aigrid.store.db import StoreCalls, make_engine, migrate
from aigrid.store.experience import ExperienceStore

PLAN = {"steps": [{"id": "a", "call": "north.search", "args": {"query": "pan"}}]}


class BagOfWordsEmbedderDouble:
    """A test double for the grid's embeddings: one dimension per word of a small vocabulary."""

    VOCABULARY = ("buy", "pan", "flight", "beijing", "hotel", "noodles", "kettle", "order", "book")

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    async def __call__(self, tenant_id: int, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.down:
            raise APIError(503, "the embedding model is restarting")
        return [[float(w in t.lower().split()) + 0.01 for w in self.VOCABULARY] for t in texts]


@pytest.fixture
def memory(tmp_path: Path) -> tuple[ExperienceMemory, BagOfWordsEmbedderDouble, int, int]:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    migrate(engine)
    accounts = AccountStore(engine)
    first, second = accounts.ensure_tenant("acme"), accounts.ensure_tenant("globex")
    embed = BagOfWordsEmbedderDouble()
    kept = ExperienceMemory(ExperienceStore(engine, max_examples=10), StoreCalls(engine), embed, "bag")
    return kept, embed, first, second


def plan(query: str) -> dict[str, object]:
    return {"steps": [{"id": "a", "call": "north.search", "args": {"query": query}}]}


async def test_a_success_is_found_by_the_next_lookup_and_only_by_its_tenant(
    memory: tuple[ExperienceMemory, BagOfWordsEmbedderDouble, int, int],
) -> None:
    kept, _, acme, globex = memory
    await kept.remember(acme, "plan", "book a flight to beijing", plan("flight"), "success", "ent-1")
    await kept.remember(acme, "plan", "buy a pan", plan("pan"), "success", "ent-2")
    found = await kept.recall(acme, "plan", "please buy me a cast iron pan", 1)
    assert [e.text for e in found.examples] == ["buy a pan"] and found.by_meaning
    assert (await kept.recall(globex, "plan", "buy a pan", 3)).examples == [], (
        "another tenant's stays its own"
    )
    await kept.remember(acme, "plan", "order noodles for dinner", plan("noodles"), "success", "ent-3")
    again = await kept.recall(acme, "plan", "order noodles", 1)
    assert [e.text for e in again.examples] == ["order noodles for dinner"], (
        "learning shows at the next lookup"
    )


async def test_failures_are_kept_but_never_shown_and_a_person_can_overrule_a_success(
    memory: tuple[ExperienceMemory, BagOfWordsEmbedderDouble, int, int],
) -> None:
    kept, _, acme, _ = memory
    await kept.remember(
        acme, "plan", "buy a kettle", plan("kettle"), "failure", "ent-9", "two steps are called 'a'"
    )
    assert (await kept.recall(acme, "plan", "buy a kettle", 3)).examples == []
    await kept.remember(acme, "plan", "buy a pan", plan("pan"), "success", "ent-2")
    assert (await kept.recall(acme, "plan", "buy a pan", 3)).examples
    assert await kept.rejudge(acme, "ent-2", "failure", "a person said it was wrong") == 1
    assert (await kept.recall(acme, "plan", "buy a pan", 3)).examples == []
    counts = kept.store.count(acme)
    assert counts == {"plan": {"failure": 2}}


async def test_words_alone_find_examples_when_the_embedding_model_is_down(
    memory: tuple[ExperienceMemory, BagOfWordsEmbedderDouble, int, int],
) -> None:
    kept, embed, acme, _ = memory
    await kept.remember(acme, "plan", "buy a pan", plan("pan"), "success", "ent-2")
    embed.down = True
    await kept.remember(acme, "plan", "book a hotel in beijing", plan("hotel"), "success", "ent-4")
    found = await kept.recall(acme, "plan", "a hotel in beijing for two nights", 1)
    assert [e.text for e in found.examples] == ["book a hotel in beijing"] and not found.by_meaning


async def test_the_same_example_is_kept_once_and_the_memory_is_bounded(
    memory: tuple[ExperienceMemory, BagOfWordsEmbedderDouble, int, int],
) -> None:
    kept, _, acme, _ = memory
    first, new = await kept.remember(acme, "plan", "buy a pan", PLAN, "success", "suite:entry")
    again, new_again = await kept.remember(acme, "plan", "Buy a pan!", PLAN, "success", "suite:entry")
    assert new and not new_again and again.id == first.id
    await kept.recall(acme, "plan", "buy a pan", 1)  # used: the bound forgets it last
    for n in range(12):
        await kept.remember(acme, "plan", f"buy item {n}", plan(f"item {n}"), "success", "suite:entry")
    texts = [e.text for e in kept.store.recent(acme, "plan", None, 100)]
    assert len(texts) == 10, "past the bound the least recently used are forgotten"
    assert "buy a pan" in texts and "buy item 0" not in texts


async def test_forgetting_takes_an_example_out_of_every_lookup(
    memory: tuple[ExperienceMemory, BagOfWordsEmbedderDouble, int, int],
) -> None:
    kept, _, acme, globex = memory
    record, _ = await kept.remember(acme, "plan", "buy a pan", PLAN, "success", "ent-2")
    assert (await kept.recall(acme, "plan", "buy a pan", 1)).examples
    with pytest.raises(AccountError, match="No example"):
        await kept.forget(record.id, globex)
    await kept.forget(record.id, acme)
    assert (await kept.recall(acme, "plan", "buy a pan", 1)).examples == []
    with pytest.raises(AccountError):
        await kept.forget(record.id, acme)


async def test_switched_off_it_shows_nothing(
    memory: tuple[ExperienceMemory, BagOfWordsEmbedderDouble, int, int],
) -> None:
    kept, embed, acme, _ = memory
    await kept.remember(acme, "plan", "buy a pan", PLAN, "success", "ent-2")
    kept.enabled = False
    calls = embed.calls
    assert (await kept.recall(acme, "plan", "buy a pan", 3)).examples == []
    assert embed.calls == calls, "a memory switched off costs no embedding"


async def test_shared_training_examples_are_shown_to_every_tenant_and_changed_by_none(
    memory: tuple[ExperienceMemory, BagOfWordsEmbedderDouble, int, int],
) -> None:
    kept, _, acme, globex = memory
    assert (await kept.recall(globex, "plan", "buy a pan", 1)).examples == []  # its index is built now
    record, _ = await kept.remember(acme, "plan", "buy a pan", PLAN, "success", "suite:entry", shared=True)
    found = await kept.recall(globex, "plan", "please buy me a pan", 1)
    assert [e.id for e in found.examples] == [record.id] and found.by_meaning, "a loaded index sees it too"
    assert [e.text for e in kept.store.recent(globex, "plan", None, 10)] == ["buy a pan"]
    with pytest.raises(AccountError, match="No example"):
        await kept.forget(record.id, globex)
    await kept.remember(globex, "plan", "buy a pan today", plan("pan"), "success", "ent-7")
    assert [e.text for e in kept.store.recent(acme, "plan", None, 10)] == ["buy a pan"], "not globex's own"


async def test_a_sentence_that_shares_no_word_with_any_example_has_no_neighbours(
    memory: tuple[ExperienceMemory, BagOfWordsEmbedderDouble, int, int],
) -> None:
    kept, embed, acme, _ = memory
    await kept.remember(acme, "plan", "buy a pan", PLAN, "success", "ent-2")
    calls = embed.calls
    assert (await kept.recall(acme, "plan", "asdf qwerty zxcv", 3)).examples == []
    assert (await kept.recall(acme, "plan", "?!", 3)).examples == []
    assert embed.calls == calls, "and costs no embedding"
