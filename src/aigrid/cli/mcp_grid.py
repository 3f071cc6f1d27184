"""aigrid's HTTP API as `aigrid mcp` reads it: one tenant's agents, processes, journals, inbox and chat."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from aigrid.cli.client import error_message


class GridError(Exception):
    """A call to aigrid that failed; the message is what the MCP client is told."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status  # aigrid's HTTP status, None when aigrid gave no answer

    @property
    def not_found(self) -> bool:
        """Whether aigrid answered that the thing asked for does not exist (for this tenant)."""
        return self.status == 404


class Grid:
    """aigrid's HTTP API as one tenant sees it: its agents, their processes, and chat."""

    def __init__(self, http: httpx.AsyncClient, tenant: str | None, timeout_s: float) -> None:
        self._http = http
        # The admin key names the tenant on every call; a tenant key's own tenant needs no naming.
        self._scope = {"tenant": tenant} if tenant else {}
        self._tenant = tenant
        self.timeout_s = timeout_s

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        where = str(self._http.base_url).rstrip("/")
        try:
            response = await self._http.request(method, path, params=params, json=body)
        except httpx.ConnectError:
            raise GridError(f"cannot reach aigrid at {where} (is 'aigrid serve' running?)") from None
        except httpx.TimeoutException:
            raise GridError(f"aigrid at {where} did not answer {method} {path} in time") from None
        except httpx.HTTPError as exc:
            raise GridError(f"request to aigrid at {where} failed: {exc}") from exc
        if response.is_error:
            raise GridError(error_message(response), response.status_code)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise GridError(f"aigrid at {where} answered {method} {path} with no JSON object")
        return data

    async def _listing(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        listing = await self._call("GET", path, params=params)
        return [item for item in listing.get("data", []) if isinstance(item, dict)]

    async def agents(self) -> list[dict[str, Any]]:
        """The tenant's agents, the newest version of each."""
        return [a for a in await self._listing("/v1/agents", self._scope) if isinstance(a.get("name"), str)]

    async def agent(self, name: str) -> dict[str, Any]:
        """The newest version of one agent; a GridError (404) when the tenant has none of that name."""
        return await self._call("GET", f"/v1/agents/{quote(name, safe='')}", params=self._scope)

    async def models(self) -> list[str]:
        """The names of the models the grid serves."""
        return [str(m["id"]) for m in await self._listing("/v1/models") if "id" in m]

    async def tools(self) -> list[dict[str, Any]]:
        """The tools the tenant's agents can be granted."""
        return await self._listing("/v1/tools", self._scope)

    async def chat(self, prompt: str, model: str) -> str:
        """The assistant's answer to one user message."""
        body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
        answer = await self._call("POST", "/v1/chat/completions", body=body)
        choices = answer.get("choices") or [{}]
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""

    async def start(self, agent: str, text: str) -> dict[str, Any]:
        """A new process of ``agent`` on ``text``, as aigrid answered its start."""
        return await self._call("POST", "/v1/processes", body={"agent": agent, "input": text, **self._scope})

    async def processes(self, limit: int) -> list[dict[str, Any]]:
        """The tenant's ``limit`` newest processes, newest first."""
        return await self._listing("/v1/processes", {**self._scope, "limit": str(limit)})

    async def process(self, pid: str) -> dict[str, Any]:
        """One of the tenant's processes; a GridError (404) for another tenant's or none."""
        process = await self._call("GET", f"/v1/processes/{quote(pid, safe='')}")
        # The admin key reads every tenant's processes: served for one tenant, it shows that one's only.
        if self._tenant is not None and process.get("tenant") != self._tenant:
            raise GridError(f"No process {pid}.", 404)
        return process

    async def kill(self, pid: str) -> dict[str, Any]:
        """Kill one of the tenant's processes (a GridError, 409, when it has already ended)."""
        return await self._call("POST", f"/v1/processes/{quote(pid, safe='')}/kill")

    async def journal(self, pid: str, after: int = 0) -> list[dict[str, Any]]:
        """A process's journaled steps after step ``after``, in order."""
        return await self._listing(f"/v1/processes/{quote(pid, safe='')}/journal", {"after": str(after)})

    async def inbox(self) -> list[dict[str, Any]]:
        """The tenant's inbox: agents' notes and unattended runs' results, oldest first."""
        return await self._listing("/v1/inbox", {**self._scope, "limit": "1000"})

    async def approvals(self) -> list[dict[str, Any]]:
        """The tool calls of the tenant's agents waiting for a person's yes or no."""
        return await self._listing("/v1/approvals", self._scope)
