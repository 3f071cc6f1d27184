"""The providers a server has open: from the config file, and added or removed at run time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from aigrid.config import ProviderConfig
from aigrid.kernel.providers.base import ProviderError, ToolProvider
from aigrid.kernel.tools import ToolRegistry
from aigrid.store.accounts import AccountError
from aigrid.store.provider_oauth import ProviderOAuthStore
from aigrid.store.providers import ProviderStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """A provider as listed: its config, where it was declared, its tools or why it is down."""

    config: ProviderConfig
    origin: str  # "config" (the config file) or "runtime" (aigrid tool add)
    tools: tuple[str, ...]
    error: str | None


def open_provider(config: ProviderConfig, credentials: ProviderOAuthStore | None = None) -> ToolProvider:
    """A provider of the configured kind, not yet opened (an MCP one's OAuth kept in ``credentials``)."""
    if config.kind == "mcp":
        from aigrid.kernel.providers.mcp import McpProvider

        return McpProvider(config, credentials)
    from aigrid.kernel.providers.openapi import OpenApiProvider

    return OpenApiProvider(config)


class ProviderManager:
    """Opens providers into a tool registry, and adds, lists and removes them."""

    def __init__(
        self,
        registry: ToolRegistry,
        store: ProviderStore,
        tenant_id: Callable[[str], int],
        configured: list[ProviderConfig],
        factory: Callable[[ProviderConfig], ToolProvider] | None = None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._tenant_id = tenant_id
        self._configured = configured
        self._factory = factory or partial(open_provider, credentials=store.oauth)
        self._open: dict[str, ToolProvider] = {}
        self._status: dict[str, ProviderStatus] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Open every configured and kept provider; one that fails is listed with its error."""
        kept = await asyncio.to_thread(self._store.all)
        jobs = [(c, "config") for c in self._configured] + [(c, "runtime") for c in kept]
        async with self._lock:
            results = await asyncio.gather(*(self._connect(c, o) for c, o in jobs), return_exceptions=True)
        for (config, _), result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("tool provider '%s' is down: %s", config.name, result)

    async def add(self, config: ProviderConfig, manifest: str | None = None) -> ProviderStatus:
        """Open a new provider and keep it (with a service's manifest) for later starts.

        409 for a name in use, 400 if it fails to open.
        """
        async with self._lock:
            if config.name in self._status:
                raise AccountError(409, f"A tool provider named '{config.name}' exists already.")
            try:
                status = await self._connect(config, "runtime")
            except ProviderError as exc:
                self._status.pop(config.name, None)
                if config.oauth is not None:  # the client secret given with it goes too
                    await asyncio.to_thread(self._store.oauth.forget, config.name)
                raise AccountError(400, str(exc)) from exc
            try:
                await asyncio.to_thread(self._store.save, config, manifest)
            except AccountError:
                await self._disconnect(config.name)
                raise
            return status

    async def remove(self, name: str) -> None:
        """Close a run-time provider and forget it; 404 unknown, 409 for one from the config file."""
        async with self._lock:
            status = self._status.get(name)
            if status is None:
                raise AccountError(404, f"No tool provider named '{name}'.")
            if status.origin == "config":
                raise AccountError(
                    409, f"Tool provider '{name}' comes from the config file; remove it there."
                )
            await self._disconnect(name)
            await asyncio.to_thread(self._store.delete, name)

    def statuses(self) -> list[ProviderStatus]:
        """Every provider, by name."""
        return [self._status[n] for n in sorted(self._status)]

    async def close(self) -> None:
        """Close every provider (child processes exit, connections end)."""
        async with self._lock:
            for name in list(self._open):
                await self._disconnect(name)

    async def _connect(self, config: ProviderConfig, origin: str) -> ProviderStatus:
        self._status[config.name] = ProviderStatus(config, origin, (), "opening")
        try:
            tenant = (
                None if config.tenant is None else await asyncio.to_thread(self._tenant_id, config.tenant)
            )
            provider = self._factory(config)
            tools = await provider.open()
        except (ProviderError, AccountError) as exc:
            message = exc.message if isinstance(exc, AccountError) else str(exc)
            self._status[config.name] = ProviderStatus(config, origin, (), message)
            raise ProviderError(message) from exc
        try:
            self._registry.add_all(tools, tenant, config.name)
        except ValueError as exc:
            await provider.close()
            message = f"tool provider '{config.name}': {exc}"
            self._status[config.name] = ProviderStatus(config, origin, (), message)
            raise ProviderError(message) from exc
        self._open[config.name] = provider
        status = ProviderStatus(config, origin, tuple(t.name for t in tools), None)
        self._status[config.name] = status
        return status

    async def _disconnect(self, name: str) -> None:
        self._registry.remove_provider(name)
        self._status.pop(name, None)
        provider = self._open.pop(name, None)
        if provider is not None:
            try:
                await provider.close()
            except Exception:  # a provider that fails to close is gone all the same
                logger.exception("closing tool provider '%s'", name)
