"""`aigrid serve` starting, as a person sees it: each deployment loading, then where it answers."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from tests.support import ADMIN_KEY, LiveServer, free_port, mock_config

from aigrid.config import DeploymentConfig
from aigrid.grid.backends.base import Backend, Completion, Endpoint, StreamSession
from aigrid.grid.backends.embedded import EmbeddedBackend
from aigrid.server import StartDisplay

URL = "http://127.0.0.1:8700/v1"
CLOUD = DeploymentConfig(backend="openai", base_url="http://cloud.test/v1", upstream_model="gpt-x")
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Small, so that loading the real model takes a fraction of a second.
EMBEDDED = DeploymentConfig(backend="embedded", context_length=512, threads=1, parallel=1, cache_sequences=0)


class Remote(Backend):
    """A backend with nothing to load, as an OpenAI-compatible upstream is."""

    async def complete(self, endpoint: Endpoint, body: dict[str, Any], model: str) -> Completion:
        raise NotImplementedError

    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], model: str, include_usage: bool
    ) -> StreamSession:
        raise NotImplementedError


def terminal() -> tuple[StartDisplay, io.StringIO]:
    out = io.StringIO()
    return StartDisplay(Console(file=out, force_terminal=True, width=100, color_system=None)), out


def seen(out: io.StringIO) -> list[str]:
    """The lines the terminal was sent, every frame's, without cursor movements."""
    return [line.strip() for line in _CONTROL.sub("\n", out.getvalue()).replace("\r", "\n").splitlines()]


def test_each_deployment_loads_with_its_elapsed_time_then_the_url() -> None:
    display, out = terminal()
    display.begin()
    for name in ("gpt-x/cloud-a", "gpt-x/cloud-b"):
        with display.starting(Remote(name, CLOUD)):
            pass
    display.end(URL)
    lines = seen(out)
    for name in ("gpt-x/cloud-a", "gpt-x/cloud-b"):
        done = [line for line in lines if line.startswith(f"✓ loading {name} ")]
        assert done and done[-1].endswith("100% 0:00:00"), lines
    assert any(line.startswith("✓ starting aigrid") for line in lines)
    assert [line for line in lines if line][-1] == f"ready: {URL}"


def test_a_model_that_fails_to_load_is_marked_and_the_display_ends() -> None:
    display, out = terminal()
    display.begin()
    with pytest.raises(FileNotFoundError), display.starting(EmbeddedBackend("broken/embedded", EMBEDDED)):
        raise FileNotFoundError("no model file")
    display.end(None)
    lines = seen(out)
    assert any("could not load broken/embedded" in line for line in lines)
    assert not any(line.startswith("ready") for line in lines)


def test_an_embedded_model_shows_llamas_percentage_then_its_kv_cache() -> None:
    backend = EmbeddedBackend("smollm2/embedded", EMBEDDED)
    display, out = terminal()
    display.begin()
    with display.starting(backend):
        assert backend.load_progress is not None
        backend.load_progress(0.6)
        display.progress.refresh()
        assert any("loading smollm2/embedded " in line and "59%" in line for line in seen(out))
        backend.load_progress(1.0)
        display.progress.refresh()
        assert any("(weights in; making the KV cache)" in line and "99%" in line for line in seen(out))
    assert backend.load_progress is None
    display.end(URL)
    done = [line for line in seen(out) if line.startswith("✓ loading smollm2/embedded ")]
    assert done and "100%" in done[-1] and "KV cache" not in done[-1]


@pytest.fixture
async def embedded() -> AsyncIterator[EmbeddedBackend]:
    backend = EmbeddedBackend("smollm2/embedded", EMBEDDED)
    yield backend
    await backend.close()


@pytest.mark.slow
async def test_llama_cpp_reports_how_far_the_weights_are(embedded: EmbeddedBackend) -> None:
    fractions: list[float] = []
    embedded.load_progress = fractions.append
    await embedded.start()
    assert len(fractions) > 2 and fractions[0] < 0.5 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)


def _serve_in_a_terminal(data_dir: Path, config: str, port: int) -> str:
    """What `aigrid serve` shows a terminal until it says it is ready (then it is stopped)."""
    (data_dir / "grid.toml").write_text(config)
    command = [sys.executable, "-m", "aigrid", "serve", "--config", str(data_dir / "grid.toml")]
    command += ["--port", str(port), "--data-dir", str(data_dir)]
    env = {**os.environ, "AIGRID_ADMIN_KEY": ADMIN_KEY, "COLUMNS": "120", "TERM": "xterm"}
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    shown = b""
    try:
        deadline = time.monotonic() + 60
        while b"ready:" not in shown and time.monotonic() < deadline and proc.poll() is None:
            if select.select([leader], [], [], 0.2)[0]:
                shown += os.read(leader, 65536)
        time.sleep(0.2)
        while select.select([leader], [], [], 0.1)[0]:
            shown += os.read(leader, 65536)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        os.close(leader)
    return _CONTROL.sub("", shown.decode(errors="replace"))


@pytest.mark.slow
def test_serve_on_a_terminal_shows_the_deployments_loading(tmp_path: Path, mock_upstream: str) -> None:
    port = free_port()
    shown = _serve_in_a_terminal(tmp_path, mock_config(mock_upstream), port)
    assert f"URL:       http://127.0.0.1:{port}/v1" in shown and f"admin key: {ADMIN_KEY}" in shown
    assert re.search(r"✓ loading mock/mock\s+━+ 100% \d:\d\d:\d\d", shown), shown
    assert f"ready: http://127.0.0.1:{port}/v1" in shown


@pytest.mark.slow
def test_serve_off_a_terminal_logs_lines_only(tmp_path: Path, mock_upstream: str) -> None:
    server = LiveServer(tmp_path, mock_config(mock_upstream)).start()
    try:
        deadline = time.monotonic() + 10
        while "ready:" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
    log = server.log()
    assert f"URL:       {server.url}/v1" in log and f"admin key: {ADMIN_KEY}" in log
    assert re.search(rf"INFO aigrid\.server: ready: {re.escape(server.url)}/v1", log), log
    assert "━" not in log and "loading" not in log and "\x1b[" not in log
