"""What a tool provider is declared with, and what every provider does: open to tools, close."""

from __future__ import annotations

import re
from typing import Protocol

from aigrid.config import ProviderConfig
from aigrid.kernel.tools import Tool

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


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
