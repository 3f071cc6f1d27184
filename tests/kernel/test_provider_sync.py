"""A server's tool providers follow those another server added or removed (``ProviderManager.sync``)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from aigrid.config import ProviderConfig
from aigrid.kernel.providers.base import ProviderError
from aigrid.kernel.providers.manager import ProviderManager
from aigrid.kernel.tools import Tool, ToolRegistry
from aigrid.store.db import make_engine, migrate
from aigrid.store.payers import PayerStore
from aigrid.store.providers import ProviderStore


class FakeProvider:
    """A provider without tools that records its closing; ``broken`` names fail to open."""

    def __init__(self, config: ProviderConfig, closed: list[str], broken: set[str]) -> None:
        self.config = config
        self._closed = closed
        self._broken = broken

    async def open(self) -> list[Tool]:
        if self.config.name in self._broken:
            raise ProviderError(f"tool provider '{self.config.name}': cannot start")
        return []

    async def close(self) -> None:
        self._closed.append(self.config.name)


def _manager(
    engine: Engine, closed: list[str], broken: set[str], configured: list[ProviderConfig]
) -> ProviderManager:
    return ProviderManager(
        ToolRegistry(),
        ProviderStore(engine),
        lambda _: 1,
        configured,
        PayerStore(engine).refusal,
        factory=lambda c: FakeProvider(c, closed, broken),
    )


def _mcp(name: str) -> ProviderConfig:
    return ProviderConfig(name=name, kind="mcp", command=("srv",))


async def test_sync_opens_what_a_peer_added_and_closes_what_it_removed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    migrate(engine)
    closed_here: list[str] = []
    peer = _manager(engine, [], set(), [])
    here = _manager(engine, closed_here, {"flaky"}, [_mcp("fixed")])
    await here.start()
    try:
        await peer.add(_mcp("calc"))
        await peer.add(_mcp("flaky"))
        await here.sync()
        shown = {s.config.name: (s.origin, s.error) for s in here.statuses()}
        assert shown == {
            "calc": ("runtime", None),
            "fixed": ("config", None),
            "flaky": ("runtime", "tool provider 'flaky': cannot start"),
        }
        await here.sync()  # nothing moved: nothing opened or closed again
        assert closed_here == []

        await peer.remove("calc")
        await peer.remove("flaky")
        await here.sync()
        assert [s.config.name for s in here.statuses()] == ["fixed"], "one from the config file stays"
        assert closed_here == ["calc"]
    finally:
        await here.close()
        await peer.close()
