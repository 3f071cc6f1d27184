"""The config sync task: reloads what another server changed, and outlives a database hiccup."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from tests.support import eventually

from aigrid.api import config_sync
from aigrid.api.auth import KeyRing
from aigrid.api.config_sync import ConfigSync
from aigrid.config import ProviderConfig
from aigrid.errors import APIError
from aigrid.grid.limits import Admission
from aigrid.store.accounts import AccountStore, Principal
from aigrid.store.config_versions import read_versions
from aigrid.store.db import make_engine, migrate
from aigrid.store.providers import ProviderStore


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    made = make_engine(f"sqlite:///{tmp_path / 'sync.db'}")
    migrate(made)
    return made


def _sync(engine: Engine, every_s: float = 0.01) -> tuple[AccountStore, KeyRing, Admission, ConfigSync]:
    accounts = AccountStore(engine)
    keyring = KeyRing("sk-admin", Principal(accounts.ensure_tenant("admin"), "admin", None, is_admin=True))
    admission = Admission()
    sync = ConfigSync(engine, accounts, keyring, admission, every_s, read_versions(engine))
    return accounts, keyring, admission, sync


def _accepts(keyring: KeyRing, secret: str) -> bool:
    try:
        keyring.authenticate_header(f"Bearer {secret}".encode())
    except APIError:
        return False
    return True


async def test_a_poll_reloads_only_the_kinds_that_moved(engine: Engine) -> None:
    accounts, keyring, admission, sync = _sync(engine)
    assert await sync.poll() == []
    accounts.create_tenant("t")
    new = accounts.create_key("t")
    assert await sync.poll() == ["keys"]
    assert _accepts(keyring, new.secret)
    accounts.set_budget("t", "tokens", "day", 100)
    accounts.set_rate_limits("t", 5, None)
    assert sorted(await sync.poll()) == ["budgets", "limits"]
    tid = accounts.tenant_id("t")
    assert [(b.kind, b.limit) for b in admission.budgets(tid)] == [("tokens", 100)]
    assert admission.limits(tid).rpm is not None
    accounts.revoke_key(new.id)
    accounts.revoke_key(new.id)  # a second revocation changes nothing, and moves nothing
    assert await sync.poll() == ["keys"]
    assert not _accepts(keyring, new.secret)
    assert await sync.poll() == []


async def test_the_task_survives_a_database_hiccup_and_catches_up(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    accounts, keyring, _, sync = _sync(engine)
    real = config_sync.read_versions
    failures = {"left": 5}

    def flaky(e: Engine) -> dict[str, int]:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))
        return real(e)

    monkeypatch.setattr(config_sync, "read_versions", flaky)
    accounts.create_tenant("t")
    new = accounts.create_key("t")
    caplog.set_level(logging.WARNING, logger=config_sync.__name__)
    sync.start()
    try:
        await eventually(lambda: _accepts(keyring, new.secret), "the key made during the hiccup", 5)
    finally:
        await sync.aclose()
    messages = [r.getMessage() for r in caplog.records]
    # One warning for the whole outage, not one a poll, and one when it ends.
    assert messages == [
        "reading config changes from the database failed; retrying",
        "reading config changes from the database works again",
    ]


async def test_a_reload_that_fails_is_tried_again(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    accounts, keyring, _, sync = _sync(engine)
    accounts.create_tenant("t")
    new = accounts.create_key("t")
    real = accounts.active_keys

    def broken() -> list[tuple[str, Principal]]:
        raise OperationalError("SELECT", {}, Exception("connection reset"))

    monkeypatch.setattr(accounts, "active_keys", broken)
    with pytest.raises(OperationalError):
        await sync.poll()
    monkeypatch.setattr(accounts, "active_keys", real)
    assert await sync.poll() == ["keys"]
    assert _accepts(keyring, new.secret)


async def test_a_kind_followed_after_start_catches_changes_made_before(engine: Engine) -> None:
    *_, sync = _sync(engine)
    ProviderStore(engine).save(ProviderConfig(name="calc", kind="mcp", command=("srv",)))
    assert await sync.poll() == [], "not followed yet: the counter waits"
    reloaded: list[str] = []

    async def reload() -> None:
        reloaded.append("providers")

    sync.follow("providers", reload)
    assert await sync.poll() == ["providers"] and reloaded == ["providers"]
    assert ProviderStore(engine).delete("calc") and not ProviderStore(engine).delete("calc")
    assert await sync.poll() == ["providers"] and await sync.poll() == []
