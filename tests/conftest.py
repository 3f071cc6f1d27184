"""Shared fixtures: the shared mock upstream, test doubles of upstreams, and live aigrid servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.postgres import Postgres
from tests.support import SCREENSHOTS, LiveServer, RecordingUpstream, free_port, mock_config, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AIGRID_SHARED", ROOT.parent / "shared"))
MOCK_UPSTREAM = SHARED / "bench" / "mock_upstream.py"


def _start_mock(delay_ms: int = 0, chunks: int = 16) -> tuple[subprocess.Popen[bytes], str]:
    if not MOCK_UPSTREAM.exists():
        pytest.fail(f"the shared mock upstream is missing: {MOCK_UPSTREAM} (set AIGRID_SHARED)")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(MOCK_UPSTREAM),
            "--port",
            str(port),
            "--delay-ms",
            str(delay_ms),
            "--chunks",
            str(chunks),
        ]
    )
    wait_for_port(port)
    return proc, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL server for the session; skips (or fails, where required) without one."""
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[str]:
    """Base URL of the shared fast mock OpenAI upstream."""
    proc, url = _start_mock()
    yield url
    proc.terminate()
    proc.wait()


@pytest.fixture(scope="session")
def slow_upstream() -> Iterator[str]:
    """Base URL of the shared mock answering after one second."""
    proc, url = _start_mock(delay_ms=1000)
    yield url
    proc.terminate()
    proc.wait()


@pytest.fixture(scope="session")
def failing_upstream() -> Iterator[RecordingUpstream]:
    """A test double upstream that answers every request with HTTP 500."""
    upstream = RecordingUpstream(status=500)
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def recording_upstream() -> Iterator[RecordingUpstream]:
    """A test double upstream that records request bodies and answers like the mock."""
    upstream = RecordingUpstream(status=200)
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def dead_url() -> str:
    """A base URL where nothing listens (connections are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    time.sleep(0.01)
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    """A recording, scriptable upstream shared by one module's tests."""
    double = RecordingUpstream()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: RecordingUpstream
) -> Iterator[LiveServer]:
    """A live server serving model ``mock`` from ``upstream``; a module's ``SERVER_CONFIG`` is added to it."""
    extra = getattr(request.module, "SERVER_CONFIG", "")
    srv = LiveServer(tmp_path_factory.mktemp("server"), mock_config(upstream.url, extra=extra)).start()
    yield srv
    srv.stop()


_RUN_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the folder of the console's screenshots, when this run's browser tests left some."""
    shots = [p for p in SCREENSHOTS.glob("*.png") if p.stat().st_mtime >= _RUN_STARTED]
    if shots:
        terminalreporter.write_line(f"screenshots of the console ({len(shots)}): {SCREENSHOTS}")
