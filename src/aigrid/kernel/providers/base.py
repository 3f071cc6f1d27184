"""What a tool provider is declared with, and what every provider does: open to tools, close."""

from __future__ import annotations

import re
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aigrid.kernel.tools import Tool

ProviderKind = Literal["mcp", "openapi"]

# A provider's name prefixes its tools ("shop" gives "shop.search"), so it is kept short and plain.
PROVIDER_NAME = r"^[a-z][a-z0-9_-]{0,31}$"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class ProviderConfig(BaseModel):
    """One MCP server (a command over stdio, or a streamable HTTP URL) or one OpenAPI service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=PROVIDER_NAME)
    kind: ProviderKind
    command: tuple[str, ...] = Field(default=(), max_length=256)
    env: dict[str, str] = Field(default_factory=dict)
    url: str | None = Field(default=None, max_length=2000)
    spec: str | None = Field(default=None, max_length=2000)
    base_url: str | None = Field(default=None, max_length=2000)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    tenant: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_source(self) -> ProviderConfig:
        if self.kind == "mcp" and bool(self.command) == bool(self.url):
            raise ValueError("an 'mcp' provider needs either command (stdio) or url (streamable HTTP)")
        if self.kind == "openapi" and not self.spec:
            raise ValueError("an 'openapi' provider needs spec (a file path or URL)")
        if self.kind == "openapi" and self.command:
            raise ValueError("an 'openapi' provider takes spec and base_url, not command")
        return self

    def describe(self) -> str:
        """Where the tools come from, in a few words, for listings."""
        if self.kind == "openapi":
            return f"openapi {self.spec}"
        return f"mcp {self.url}" if self.url else f"mcp stdio {' '.join(self.command)}"


class ToolProvider(Protocol):
    """A source of tools that may hold a connection: opened once, closed at shutdown or removal."""

    config: ProviderConfig

    async def open(self) -> list[Tool]:
        """Connect (or load), and return the provider's tools, named ``<provider>.<tool>``."""

    async def close(self) -> None:
        """Release connections and child processes; the tools stop working."""


def tool_name(provider: str, name: str) -> str:
    """A provider's tool name as the kernel knows it: ``<provider>.<name>``, unsafe characters as ``_``."""
    return f"{provider}.{_UNSAFE.sub('_', name).strip('_')[:96] or 'tool'}"


class ProviderError(Exception):
    """A provider that cannot be opened, with the reason for the person who configured it."""
