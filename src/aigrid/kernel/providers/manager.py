"""The providers a server has open: from the config file, and added or removed at run time."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from aigrid.config import OAuthConfig, ProviderConfig
from aigrid.kernel.providers.base import ProviderError, ToolProvider
from aigrid.kernel.providers.oauth import StoredCredentials
from aigrid.kernel.providers.oauth_login import Login, code_from
from aigrid.kernel.tools import CallContext, Handler, Refusal, Tool, ToolRegistry
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


def _needs_login(config: ProviderConfig) -> bool:
    return config.oauth is not None and config.oauth.grant == "authorization_code"


def _oauth(config: ProviderConfig) -> OAuthConfig:
    if config.oauth is None:
        raise ValueError(f"tool provider '{config.name}' has no oauth section")
    return config.oauth


class ProviderManager:
    """Opens providers into a tool registry, and adds, lists and removes them."""

    def __init__(
        self,
        registry: ToolRegistry,
        store: ProviderStore,
        tenant_id: Callable[[str], int],
        configured: list[ProviderConfig],
        refusal: Callable[[int, str], str | None],
        factory: Callable[[ProviderConfig], ToolProvider] | None = None,
    ) -> None:
        self._registry = registry
        self._refusal = refusal
        self._store = store
        self._tenant_id = tenant_id
        self._configured = configured
        self._factory = factory or partial(open_provider, credentials=store.oauth)
        self._open: dict[str, ToolProvider] = {}
        self._status: dict[str, ProviderStatus] = {}
        self._lock = asyncio.Lock()
        self._logins: dict[str, Login] = {}

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

        409 for a name in use, 400 if it fails to open; one an admin logs in to (OAuth's
        authorization_code grant) is kept down until then.
        """
        async with self._lock:
            if config.name in self._status:
                raise AccountError(409, f"A tool provider named '{config.name}' exists already.")
            try:
                status = await self._connect(config, "runtime")
            except ProviderError as exc:
                if _needs_login(config):
                    await asyncio.to_thread(self._store.save, config, manifest)
                    return self._status[config.name]
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
            login = self._logins.pop(name, None)
            if login is not None:
                await login.cancel()
            await asyncio.to_thread(self._store.delete, name)

    async def login(self, name: str) -> str:
        """Start an admin's OAuth login to a provider: the URL to open in a browser.

        404 unknown, 400 for a provider without the authorization_code grant or a server that fails.
        """
        config = self._login_config(name)
        previous = self._logins.pop(name, None)
        if previous is not None:
            await previous.cancel()
        url = config.url or ""
        from aigrid.kernel.providers.mcp import McpProvider  # as in open_provider: only where MCP is used

        # A provider in use that a server refused a call for lack of scope (a step-up): the login asks for it.
        provider = self._open.get(name)
        wanted = provider.wanted_scope if isinstance(provider, McpProvider) else None
        storage = StoredCredentials(self._store.oauth, name)
        login = Login(url, storage, _oauth(config), config.timeout_s, wanted)
        try:
            authorization_url = await login.start()
        except ProviderError as exc:
            raise AccountError(400, f"tool provider '{name}': the login could not start: {exc}") from exc
        self._logins[name] = login
        return authorization_url

    async def finish_login(self, name: str, redirect_url: str) -> ProviderStatus:
        """End a login with the address the browser was sent back to, then open the provider again.

        409 without a login in progress, 400 when the code is refused.
        """
        config = self._login_config(name)
        login = self._logins.pop(name, None)
        if login is None:
            raise AccountError(409, f"No login to tool provider '{name}' is in progress: start one first.")
        try:
            await login.finish(code_from(redirect_url))
        except ProviderError as exc:
            raise AccountError(400, f"tool provider '{name}': the login failed: {exc}") from exc
        async with self._lock:
            origin = self._status[name].origin if name in self._status else "runtime"
            await self._disconnect(name)
            try:
                return await self._connect(config, origin)
            except ProviderError:
                return self._status[name]

    def _login_config(self, name: str) -> ProviderConfig:
        status = self._status.get(name)
        if status is None:
            raise AccountError(404, f"No tool provider named '{name}'.")
        if not _needs_login(status.config):
            raise AccountError(
                400, f"Tool provider '{name}' has no OAuth login: its oauth grant is not authorization_code."
            )
        return status.config

    async def sync(self) -> None:
        """Match the run-time providers to those stored: open the new, close the removed.

        How providers added or removed through another server of a cluster reach this one; a
        provider that fails to open is listed with its error, as at start.
        """
        # Read under the lock: a provider added here meanwhile must not look removed.
        async with self._lock:
            kept = await asyncio.to_thread(self._store.all)
            names = {c.name for c in kept}
            gone = [n for n, s in self._status.items() if s.origin == "runtime" and n not in names]
            for name in gone:
                await self._disconnect(name)
                login = self._logins.pop(name, None)
                if login is not None:
                    await login.cancel()
            new = [c for c in kept if c.name not in self._status]
            results = await asyncio.gather(
                *(self._connect(c, "runtime") for c in new), return_exceptions=True
            )
        for config, result in zip(new, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("tool provider '%s' is down: %s", config.name, result)

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
            if config.acts_for is not None:
                tools = [self._bound(tool, config.acts_for) for tool in tools]
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

    def _bound(self, tool: Tool, argument: str) -> Tool:
        """``tool``, refusing a call whose ``argument`` names a user the calling tenant does not act for."""
        handler = tool.handler

        async def guarded(arguments: dict[str, Any], context: CallContext) -> Any:
            user = arguments.get(argument)
            if user is not None:
                if not isinstance(user, str):
                    raise Refusal(f"'{argument}' must be a user name")
                why = await asyncio.to_thread(self._refusal, context.tenant_id, user)
                if why is not None:
                    raise Refusal(why)
            return await handler(arguments, context)

        bound: Handler = guarded
        return dataclasses.replace(tool, handler=bound)

    async def _disconnect(self, name: str) -> None:
        self._registry.remove_provider(name)
        self._status.pop(name, None)
        provider = self._open.pop(name, None)
        if provider is not None:
            try:
                await provider.close()
            except Exception:  # a provider that fails to close is gone all the same
                logger.exception("closing tool provider '%s'", name)
