"""The HTTP client the CLI's commands use to talk to a running aigrid server."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8700"
DEFAULT_DATA_DIR = ".aigrid"
TIMEOUT_S = 30.0


class CLIError(Exception):
    """A failure the CLI reports as `error: <message>`, exiting with `exit_code`; `status` is the HTTP one."""

    def __init__(self, message: str, exit_code: int = 1, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status


def server_url() -> str:
    """The server's base URL: AIGRID_URL, or the address `aigrid serve` listens on by default."""
    return (os.environ.get("AIGRID_URL") or DEFAULT_URL).rstrip("/")


def admin_key() -> str:
    """The admin key from AIGRID_ADMIN_KEY, else from the admin_key file the server writes in its data dir."""
    key = os.environ.get("AIGRID_ADMIN_KEY", "").strip()
    if key:
        return key
    path = Path(os.environ.get("AIGRID_DATA_DIR") or DEFAULT_DATA_DIR) / "admin_key"
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError:
        key = ""
    if not key:
        raise CLIError(
            f"no admin key: set AIGRID_ADMIN_KEY, or AIGRID_DATA_DIR to the server's data dir "
            f"(no key found in {path})",
            exit_code=2,
        )
    return key


def connect(transport: httpx.BaseTransport | None = None) -> AdminClient:
    """A client for the server at AIGRID_URL with the admin key; `transport` replaces the network."""
    return AdminClient(server_url(), admin_key(), transport=transport)


def error_message(response: httpx.Response) -> str:
    """An error answer's message: the OpenAI-shaped error's, else the status and the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        if isinstance(message, str):
            return message
    snippet = response.text.strip()[:200]
    return f"HTTP {response.status_code} {response.reason_phrase}" + (f": {snippet}" if snippet else "")


class AdminClient:
    """Typed calls to aigrid's admin and usage API: one method per endpoint, each returning its JSON."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            self._http = httpx.Client(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {key}"},
                timeout=timeout_s,
                transport=transport,
            )
        except httpx.InvalidURL as exc:
            raise CLIError(f"not a usable server URL {self.base_url!r}: {exc}", exit_code=2) from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying connections."""
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | None] | None = None,
        body: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """One call to the API: its JSON object, or a CLIError with the server's message."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        # httpx's own default ("use the client's") is a sentinel, not None: give it only when asked.
        extra: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
        try:
            response = self._http.request(method, path, params=query, json=body, **extra)
        except (httpx.ConnectError, httpx.TimeoutException) as exc:
            raise CLIError(f"cannot reach aigrid at {self.base_url} (is 'aigrid serve' running?)") from exc
        except httpx.HTTPError as exc:
            raise CLIError(f"request to aigrid at {self.base_url} failed: {exc}") from exc
        if response.is_error:
            raise CLIError(error_message(response), status=response.status_code)
        try:
            data = response.json()
        except ValueError as exc:
            raise CLIError(f"aigrid at {self.base_url} answered {method} {path} with invalid JSON") from exc
        if not isinstance(data, dict):
            raise CLIError(f"aigrid at {self.base_url} answered {method} {path} with a non-object JSON value")
        return data

    @contextmanager
    def stream(self, path: str, chunk_bytes: int = 1 << 16) -> Iterator[Iterator[bytes]]:
        """A GET's body in chunks (a file of the API, perhaps large), or a CLIError as ``request`` gives."""
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise CLIError(error_message(response), status=response.status_code)
                yield response.iter_bytes(chunk_bytes)
        except (httpx.ConnectError, httpx.TimeoutException) as exc:
            raise CLIError(f"cannot reach aigrid at {self.base_url} (is 'aigrid serve' running?)") from exc
        except httpx.HTTPError as exc:
            raise CLIError(f"request to aigrid at {self.base_url} failed: {exc}") from exc

    def create_tenant(self, name: str) -> dict[str, Any]:
        """POST /admin/tenants."""
        return self.request("POST", "/admin/tenants", body={"name": name})

    def cluster(self) -> dict[str, Any]:
        """GET /admin/cluster."""
        return self.request("GET", "/admin/cluster")

    def list_tenants(self) -> dict[str, Any]:
        """GET /admin/tenants."""
        return self.request("GET", "/admin/tenants")

    def tenant_users(self, tenant: str) -> dict[str, Any]:
        """GET /admin/tenants/{tenant}/users."""
        return self.request("GET", f"/admin/tenants/{quote(tenant, safe='')}/users")

    def add_tenant_user(self, tenant: str, user: str) -> dict[str, Any]:
        """PUT /admin/tenants/{tenant}/users/{user}."""
        return self.request("PUT", f"/admin/tenants/{quote(tenant, safe='')}/users/{quote(user, safe='')}")

    def remove_tenant_user(self, tenant: str, user: str) -> dict[str, Any]:
        """DELETE /admin/tenants/{tenant}/users/{user}."""
        return self.request("DELETE", f"/admin/tenants/{quote(tenant, safe='')}/users/{quote(user, safe='')}")

    def create_key(self, tenant: str, name: str | None) -> dict[str, Any]:
        """POST /admin/keys; the answer holds the secret, shown this once."""
        return self.request("POST", "/admin/keys", body={"tenant": tenant, "name": name})

    def list_keys(self, tenant: str | None) -> dict[str, Any]:
        """GET /admin/keys, optionally of one tenant."""
        return self.request("GET", "/admin/keys", params={"tenant": tenant})

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        """DELETE /admin/keys/{id}."""
        return self.request("DELETE", f"/admin/keys/{quote(key_id, safe='')}")

    def set_budget(self, tenant: str, period: str, *, tokens: int | None, cost: str | None) -> dict[str, Any]:
        """PUT /admin/budgets with a token limit or a cost limit (a decimal string in CNY)."""
        limit: dict[str, Any] = {"tokens": tokens} if tokens is not None else {"cost": cost}
        return self.request("PUT", "/admin/budgets", body={"tenant": tenant, "period": period, **limit})

    def list_budgets(self, tenant: str | None) -> dict[str, Any]:
        """GET /admin/budgets, optionally of one tenant."""
        return self.request("GET", "/admin/budgets", params={"tenant": tenant})

    def remove_budget(self, tenant: str, kind: str, period: str) -> dict[str, Any]:
        """DELETE /admin/budgets."""
        return self.request(
            "DELETE", "/admin/budgets", params={"tenant": tenant, "kind": kind, "period": period}
        )

    def set_limits(self, tenant: str, rpm: int | None, tpm: int | None) -> dict[str, Any]:
        """PUT /admin/limits; None removes a limit."""
        return self.request("PUT", "/admin/limits", body={"tenant": tenant, "rpm": rpm, "tpm": tpm})

    def list_limits(self, tenant: str | None) -> dict[str, Any]:
        """GET /admin/limits, optionally of one tenant."""
        return self.request("GET", "/admin/limits", params={"tenant": tenant})

    def usage(
        self,
        *,
        group_by: str,
        interval: str | None,
        since: str | None,
        until: str | None,
        tenant: str | None,
    ) -> dict[str, Any]:
        """GET /v1/usage, grouped and bucketed as asked."""
        params = {
            "group_by": group_by,
            "interval": interval,
            "since": since,
            "until": until,
            "tenant": tenant,
        }
        return self.request("GET", "/v1/usage", params=params)

    def deployments(self) -> dict[str, Any]:
        """GET /admin/deployments."""
        return self.request("GET", "/admin/deployments")

    def save_agent(self, spec: Mapping[str, Any], tenant: str) -> dict[str, Any]:
        """POST /v1/agents: the spec as the agent's next version."""
        return self.request("POST", "/v1/agents", body={**spec, "tenant": tenant})

    def add_service(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """POST /admin/services."""
        return self.request("POST", "/admin/services", body=config)

    def list_services(self) -> dict[str, Any]:
        """GET /v1/services."""
        return self.request("GET", "/v1/services")

    def remove_service(self, name: str) -> dict[str, Any]:
        """DELETE /admin/services/{name}."""
        return self.request("DELETE", f"/admin/services/{quote(name, safe='')}")

    def ask(
        self, text: str, user: str | None, confirm: bool, wait_s: float, plan: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """POST /v1/entry: plan the sentence (or take ``plan``), read, and (with ``confirm``) carry it out."""
        body: dict[str, Any] = {"input": text, "confirm": confirm, "wait": wait_s}
        if user is not None:
            body["user"] = user
        if plan is not None:
            body["plan"] = plan
        return self.request("POST", "/v1/entry", body=body, timeout_s=wait_s + 30)

    def confirm_entry(self, entry_id: str, wait_s: float) -> dict[str, Any]:
        """POST /v1/entry/{id}/confirm."""
        path = f"/v1/entry/{quote(entry_id, safe='')}/confirm"
        return self.request("POST", path, body={"wait": wait_s}, timeout_s=wait_s + 30)

    def decline_entry(self, entry_id: str) -> dict[str, Any]:
        """POST /v1/entry/{id}/decline."""
        return self.request("POST", f"/v1/entry/{quote(entry_id, safe='')}/decline", body={})

    def draft_agent(self, description: str, tenant: str, timezone: str) -> dict[str, Any]:
        """POST /v1/agents with a description and ``dry_run``: the compiled spec, not saved."""
        body = {"description": description, "tenant": tenant, "timezone": timezone, "dry_run": True}
        return self.request("POST", "/v1/agents", body=body)

    def draft_edit(self, name: str, change: str, tenant: str, timezone: str) -> dict[str, Any]:
        """POST /v1/agents/{name}/edit with ``dry_run``: the next version and its diff, not saved."""
        body = {"change": change, "timezone": timezone, "dry_run": True}
        return self.request(
            "POST", f"/v1/agents/{quote(name, safe='')}/edit", body=body, params={"tenant": tenant}
        )

    def list_agents(self, tenant: str | None) -> dict[str, Any]:
        """GET /v1/agents: the newest version of each agent, optionally of one tenant."""
        return self.request("GET", "/v1/agents", params={"tenant": tenant})

    def get_agent(self, name: str, tenant: str, version: int | None) -> dict[str, Any]:
        """GET /v1/agents/{name}, the newest version or the one asked for."""
        params = {"tenant": tenant, "version": None if version is None else str(version)}
        return self.request("GET", f"/v1/agents/{quote(name, safe='')}", params=params)

    def agent_versions(self, name: str, tenant: str) -> dict[str, Any]:
        """GET /v1/agents/{name}/versions."""
        return self.request("GET", f"/v1/agents/{quote(name, safe='')}/versions", params={"tenant": tenant})

    def start_process(self, agent: str, text: str, tenant: str) -> dict[str, Any]:
        """POST /v1/processes."""
        return self.request("POST", "/v1/processes", body={"agent": agent, "input": text, "tenant": tenant})

    def list_processes(self, tenant: str | None, state: str | None, limit: int) -> dict[str, Any]:
        """GET /v1/processes, newest first."""
        return self.request(
            "GET", "/v1/processes", params={"tenant": tenant, "state": state, "limit": str(limit)}
        )

    def get_process(self, pid: str) -> dict[str, Any]:
        """GET /v1/processes/{pid}."""
        return self.request("GET", f"/v1/processes/{quote(pid, safe='')}")

    def process_journal(self, pid: str) -> dict[str, Any]:
        """GET /v1/processes/{pid}/journal."""
        return self.request("GET", f"/v1/processes/{quote(pid, safe='')}/journal")

    def signal_process(self, pid: str, signal: str) -> dict[str, Any]:
        """POST /v1/processes/{pid}/{signal}."""
        return self.request("POST", f"/v1/processes/{quote(pid, safe='')}/{signal}")

    def approvals(self, tenant: str | None) -> dict[str, Any]:
        """GET /v1/approvals."""
        return self.request("GET", "/v1/approvals", params={"tenant": tenant})

    def decide(self, approval_id: str, decision: str) -> dict[str, Any]:
        """POST /v1/approvals/{id}/approve|deny."""
        return self.request("POST", f"/v1/approvals/{quote(approval_id, safe='')}/{decision}")

    def list_tools(self, tenant: str | None) -> dict[str, Any]:
        """GET /v1/tools."""
        return self.request("GET", "/v1/tools", params={"tenant": tenant})

    def list_providers(self) -> dict[str, Any]:
        """GET /admin/tools/providers."""
        return self.request("GET", "/admin/tools/providers")

    def add_provider(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """POST /admin/tools/providers."""
        return self.request("POST", "/admin/tools/providers", body=config)

    def login_provider(self, name: str) -> dict[str, Any]:
        """POST /admin/tools/providers/{name}/login."""
        return self.request("POST", f"/admin/tools/providers/{quote(name, safe='')}/login")

    def finish_login(self, name: str, redirect_url: str) -> dict[str, Any]:
        """POST /admin/tools/providers/{name}/login/callback."""
        path = f"/admin/tools/providers/{quote(name, safe='')}/login/callback"
        # The server waits for the token, then opens the provider again: both within its time limit.
        return self.request("POST", path, body={"redirect_url": redirect_url}, timeout_s=150)

    def remove_provider(self, name: str) -> dict[str, Any]:
        """DELETE /admin/tools/providers/{name}."""
        return self.request("DELETE", f"/admin/tools/providers/{quote(name, safe='')}")

    def audit(self, tenant: str | None, pid: str | None, limit: int) -> dict[str, Any]:
        """GET /v1/audit."""
        return self.request("GET", "/v1/audit", params={"tenant": tenant, "pid": pid, "limit": str(limit)})

    def memories(self, tenant: str, query: str | None, agent: str | None, limit: int) -> dict[str, Any]:
        """GET /v1/memory: a search with a query, else the newest."""
        params = {"tenant": tenant, "q": query, "agent": agent, "limit": str(limit)}
        return self.request("GET", "/v1/memory", params=params)

    def remember(self, tenant: str, text: str, key: str | None, agent: str | None) -> dict[str, Any]:
        """POST /v1/memory."""
        body = {"text": text, "key": key, "agent": agent}
        return self.request("POST", "/v1/memory", params={"tenant": tenant}, body=body)

    def forget(self, tenant: str, memory_id: int) -> dict[str, Any]:
        """DELETE /v1/memory/{id}."""
        return self.request("DELETE", f"/v1/memory/{memory_id}", params={"tenant": tenant})

    def inbox(self, tenant: str | None, after: int) -> dict[str, Any]:
        """GET /v1/inbox."""
        return self.request("GET", "/v1/inbox", params={"tenant": tenant, "after": str(after)})
