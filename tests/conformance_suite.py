"""The MCP conformance suite (@modelcontextprotocol/conformance, on Node 22) for the tests that run it.

`make test` installs Node 22 and the suite into build/ (the Makefile's `mcp-conformance` target)
and requires them with AIGRID_REQUIRE_BROWSER; without that variable a checkout that lacks them
skips the tests that run it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NODE22 = Path(os.environ.get("AIGRID_NODE22", ROOT / "build" / "node22" / "bin" / "node"))
SUITE = ROOT / "build/mcp-conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js"
# The suite names each scenario's results folder after it and the time it ran.
_STAMP = re.compile(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


def require_suite() -> None:
    """Skip the test without Node 22 and the suite, or fail it where AIGRID_REQUIRE_BROWSER asks for them."""
    missing = [str(p) for p in (NODE22, SUITE) if not p.exists()]
    if not missing:
        return
    if os.environ.get("AIGRID_REQUIRE_BROWSER"):
        pytest.fail(f"missing {', '.join(missing)}: `make mcp-conformance` installs Node 22 and the suite")
    pytest.skip(f"no {', '.join(missing)} (`make mcp-conformance` installs Node 22 and the MCP suite)")


def outcomes(results: Path, prefix: str = "") -> dict[str, list[dict[str, object]]]:
    """Each scenario's checks, from the folder the suite wrote its results to (``prefix`` cut off)."""
    found: dict[str, list[dict[str, object]]] = {}
    for checks in results.rglob("checks.json"):
        # A client scenario's name may hold a slash (auth/pre-registration): its folder is nested.
        named = _STAMP.sub("", checks.parent.relative_to(results).as_posix())
        if named != checks.parent.relative_to(results).as_posix() and named.startswith(prefix):
            found[named.removeprefix(prefix)] = json.loads(checks.read_text())
    return found
