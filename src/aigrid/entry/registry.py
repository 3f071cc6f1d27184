"""The registry third parties plug their services into: a tool provider with a manifest.

A service is opened like any tool provider (its operations become tools ``<service>.<operation>``
that agents and the planner can call) and kept with its manifest, so a restarted server opens it
again. Its manifest must describe operations the service really has.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aigrid.config import ProviderConfig
from aigrid.entry.manifest import Manifest
from aigrid.kernel.providers.manager import ProviderManager, ProviderStatus
from aigrid.store.accounts import AccountError
from aigrid.store.providers import ProviderStore


@dataclass(frozen=True, slots=True)
class Service:
    """A registered service: its manifest, how its connection is (None: not opened this run), and
    the one tenant it is kept for (None: every tenant's)."""

    name: str
    manifest: Manifest
    status: ProviderStatus | None
    tenant: str | None = None


class ServiceRegistry:
    """Adds, lists and removes third-party services."""

    def __init__(self, providers: ProviderManager, store: ProviderStore) -> None:
        self._providers = providers
        self._store = store

    async def add(self, config: ProviderConfig, manifest: Manifest) -> Service:
        """Open and keep a service; 409 for a name in use, 400 if it fails or its manifest lies."""
        if manifest.payer is not None:
            config = config.model_copy(update={"acts_for": manifest.payer})
        status = await self._providers.add(config, manifest.model_dump_json())
        missing = sorted(op for op in manifest.operations if f"{config.name}.{op}" not in status.tools)
        if missing:
            await self._providers.remove(config.name)
            have = ", ".join(t.removeprefix(f"{config.name}.") for t in status.tools) or "none"
            raise AccountError(
                400,
                f"The manifest names operations the service lacks: {', '.join(missing)} (it has: {have}).",
            )
        return Service(config.name, manifest, status, config.tenant)

    async def services(self, tenant: str | None = None) -> list[Service]:
        """The registered services, by name: every one, or those ``tenant`` may use (the grid's and
        its own; one kept for another tenant is not named to it)."""
        kept = await asyncio.to_thread(self._store.services)
        statuses = {s.config.name: s for s in self._providers.statuses()}
        return [
            Service(
                config.name, Manifest.model_validate_json(manifest), statuses.get(config.name), config.tenant
            )
            for config, manifest in kept
            if tenant is None or config.tenant in (None, tenant)
        ]

    async def remove(self, name: str) -> None:
        """Close a service and forget it; 404 if there is no service of that name."""
        if name not in await asyncio.to_thread(self._store.manifests):
            raise AccountError(404, f"No service named '{name}'.")
        await self._providers.remove(name)
