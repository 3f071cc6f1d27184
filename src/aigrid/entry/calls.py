"""One call to a service operation, and whether its outcome is known.

A service that answers with an error refused the call: nothing happened, and the saga knows it.
A call that timed out or lost its connection may or may not have happened; the saga repeats it
under the same idempotency key until the service answers one way or the other.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import orjson

from aigrid.entry.catalog import Operation
from aigrid.kernel.providers.mcp import McpToolError
from aigrid.kernel.providers.openapi import OpenApiHttpError
from aigrid.kernel.tools import CallContext

# How long the saga waits between tries of a call whose outcome is unknown: doubling up to the cap.
FIRST_RETRY_S = 0.2
MAX_RETRY_S = 30.0


# How the MCP SDK prefixes a tool's own message; the user reads the service's words alone.
_TOOL_ERROR = re.compile(r"^Error executing tool [^:]+: ")


class Refused(Exception):
    """The service answered that it will not do the call; its message says why."""


class Unknown(Exception):
    """The call got no answer: it may have happened."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Calls operations on behalf of one entry of one tenant."""

    entry_id: str
    tenant_id: int

    async def once(self, operation: Operation, args: dict[str, Any], key: str) -> Any:
        """Call once: the result, or Refused, or Unknown."""
        context = CallContext(pid=self.entry_id, tenant_id=self.tenant_id, idempotency_key=key, agent="entry")
        tool = operation.tool
        try:
            async with asyncio.timeout(tool.timeout_s):
                value = await tool.handler(args, context)
        except (McpToolError, ValueError) as exc:
            raise Refused(_TOOL_ERROR.sub("", str(exc))) from exc
        except OpenApiHttpError as exc:
            if str(exc).startswith("HTTP 4"):
                raise Refused(str(exc)) from exc
            raise Unknown(str(exc)) from exc
        except TimeoutError as exc:
            raise Unknown(f"{operation.name} did not answer within {tool.timeout_s:g} s") from exc
        except Exception as exc:  # a lost connection, a server restarting: the call may have happened
            raise Unknown(f"{operation.name}: {type(exc).__name__}: {exc}") from exc
        if isinstance(value, str):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                return value
        return value
