"""The kernel's model calls: the grid in-process, metered to the process's tenant, agent and pid."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from aigrid.grid.backends.base import Completion
from aigrid.grid.service import CallMeta, Grid
from aigrid.store.accounts import Principal
from aigrid.store.processes import ProcessRecord, StepUsage

# Room for a spec's name and instructions under the grammar (which may spend a token a character).
_JSON_MAX_TOKENS = 800


class TenantNames:
    """Tenants' names by id, as metric labels want them; read again when an id is new."""

    def __init__(self, load: Callable[[], dict[int, str]]) -> None:
        self._load = load
        self._names = load()

    def __call__(self, tenant_id: int) -> str:
        """The tenant's name (its id as text if it has none)."""
        if tenant_id not in self._names:
            self._names = self._load()
        return self._names.get(tenant_id, str(tenant_id))


class ModelRoles:
    """Which model does each kind of task (planner, compiler, agents): the configured one, unless a
    learned version was promoted to it. Read at each call, so a promotion applies to the next one."""

    def __init__(self, configured: dict[str, str]) -> None:
        self._configured = dict(configured)
        self._promoted: dict[str, str] = {}

    def model(self, kind: str) -> str:
        """The model in use for ``kind``."""
        return self._promoted.get(kind) or self._configured[kind]

    def configured(self, kind: str) -> str:
        """The model the config names for ``kind``."""
        return self._configured[kind]

    def use(self, kind: str, model: str | None) -> None:
        """Put ``model`` in use for ``kind``; None goes back to the configured one."""
        if model is None:
            self._promoted.pop(kind, None)
        else:
            self._promoted[kind] = model

    def kinds(self) -> list[str]:
        """The task kinds."""
        return list(self._configured)


class GridModelClient:
    """A ModelClient over the grid: admission, budgets, routing and the ledger apply as to any client."""

    def __init__(self, grid: Grid, tenant_name: Callable[[int], str]) -> None:
        self._grid = grid
        self._tenant_name = tenant_name

    def model_name(self, model: str) -> str:
        """The grid model a spec's ``model`` names: itself, or for a tier the first model of it."""
        router = self._grid.router
        if not router.knows(model) and (route := router.for_tier(model)) is not None:
            return route.name
        return model

    def context_window(self, model: str) -> int | None:
        """The smallest context among the model's deployments, in tokens; None if unknown."""
        name = self.model_name(model)
        if not self._grid.router.knows(name):
            return None
        return min(d.backend.config.context_length for d in self._grid.router.resolve(name).deployments)

    async def chat(self, process: ProcessRecord, body: dict[str, Any]) -> tuple[dict[str, Any], StepUsage]:
        """The assistant message of a whole (not streamed) chat completion, and what it cost."""
        return await self._ask(process.tenant_id, body, CallMeta(process.agent, process.pid))

    def json_writer(
        self,
        model: str | Callable[[], str],
        agent: str = "compiler",
        max_tokens: int = _JSON_MAX_TOKENS,
        temperature: float = 0.0,
    ) -> Callable[[int, list[dict[str, Any]], dict[str, Any]], Awaitable[str]]:
        """Asks ``model`` (or the model it names at each call) for JSON under a schema (a grammar on the
        embedded model), metered to the tenant."""

        async def write(tenant_id: int, messages: list[dict[str, Any]], schema: dict[str, Any]) -> str:
            body = {
                "model": model if isinstance(model, str) else model(),
                "messages": messages,
                "temperature": temperature,
                "max_tokens": max_tokens,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": schema},
                },
            }
            message, _ = await self._ask(tenant_id, body, CallMeta(agent, None))
            return str(message.get("content") or "")

        return write

    async def ask(self, tenant_id: int, agent: str, body: dict[str, Any]) -> dict[str, Any]:
        """The assistant message of a whole chat completion, metered to the tenant as ``agent``."""
        message, _ = await self._ask(tenant_id, body, CallMeta(agent, None))
        return message

    def embedder(self, model: str, agent: str) -> Callable[[int, list[str]], Awaitable[list[list[float]]]]:
        """Embeds texts with ``model`` through the grid, metered to the tenant as ``agent``."""

        async def embed(tenant_id: int, texts: list[str]) -> list[list[float]]:
            principal = Principal(tenant_id, self._tenant_name(tenant_id), None)
            body = {"model": self.model_name(model), "input": texts}
            _, answer = await self._grid.request(principal, "embeddings", body, CallMeta(agent, None))
            if not isinstance(answer, Completion):
                raise TypeError("the grid answered embeddings with a stream")
            data = sorted(orjson.loads(answer.body)["data"], key=lambda d: int(d["index"]))
            return [[float(x) for x in d["embedding"]] for d in data]

        return embed

    async def _ask(
        self, tenant_id: int, body: dict[str, Any], meta: CallMeta
    ) -> tuple[dict[str, Any], StepUsage]:
        principal = Principal(tenant_id, self._tenant_name(tenant_id), None)
        request = {**body, "model": self.model_name(str(body.get("model"))), "stream": False}
        _, answer = await self._grid.request(principal, "chat", request, meta)
        if not isinstance(answer, Completion):  # a whole answer was asked for
            raise TypeError("the grid answered a whole chat completion with a stream")
        message = orjson.loads(answer.body)["choices"][0]["message"]
        usage = answer.usage
        return message, StepUsage(usage.prompt_tokens, usage.completion_tokens, answer.cost_micro)
