"""The rig of ``bench/entry.py``: the five example services and one aigrid server, each on a free port.

It starts them with fresh databases under one scratch folder, registers the services through
``POST /admin/services`` with the admin key the server wrote, starts the server again after a kill,
and stops everything; and it holds the few calls on ``/v1/entry`` that the suite and the fault runs
both make.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from entry_state import State, default_seed_dir, snapshot
from processes import signals_raise, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
SERVICES_DIR = ROOT / "examples" / "services"
# name, script and its arguments, manifest
SERVICES = (
    ("northwind", ("shop.py", "--shop", "northwind"), "shop"),
    ("lakeside", ("shop.py", "--shop", "lakeside"), "shop"),
    ("payment", ("payment.py",), "payment"),
    ("travel", ("travel.py",), "travel"),
    ("food", ("food.py",), "food"),
)
OPEN_STATES = ("planning", "running", "compensating")
TASK_WAIT_S = 300
SERVER_START_S = 180.0


class BenchError(RuntimeError):
    """What stops the benchmark, with the reason."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def short(text: str, width: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- processes ----------------------------------------------------------------------------------------


@dataclass
class Child:
    """One process of the rig, in its own process group, its output appended to its log."""

    name: str
    argv: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.name} exited ({self.proc.returncode}); {self.log}:\n{tail}")

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not listens(self.port):
            self.check()
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} does not listen on port {self.port} after {timeout:g} s")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the process and everything in its group, at once."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)


def aigrid_command() -> str:
    beside = Path(sys.executable).parent / "aigrid"
    return str(beside if beside.exists() else ROOT / ".venv" / "bin" / "aigrid")


class Rig:
    """The five services and one aigrid server, each on a free port, under one scratch folder."""

    def __init__(self, work: Path, config: Path | None) -> None:
        self.work = work
        self.seed = default_seed_dir()
        self.services: dict[str, Child] = {}
        self.manifests: dict[str, str] = {}
        for name, (script, *args), manifest in SERVICES:
            port = free_port()
            argv = [sys.executable, str(SERVICES_DIR / script), *args, "--port", str(port)]
            argv += ["--data-dir", str(work / "services"), "--seed", str(self.seed)]
            self.services[name] = Child(name, argv, port, work / f"{name}.log")
            self.manifests[name] = manifest
        self.urls = {name: f"http://127.0.0.1:{c.port}/mcp" for name, c in self.services.items()}
        self.data_dir = work / "aigrid"
        port = free_port()
        argv = [aigrid_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--data-dir", str(self.data_dir)] + (["--config", str(config)] if config else [])
        self.server = Child("aigrid", argv, port, work / "aigrid.log")
        self.base = f"http://127.0.0.1:{port}"
        self.key = ""

    def start(self) -> None:
        (self.work / "services").mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for child in self.services.values():
            child.start()
        for child in self.services.values():
            child.wait_listening()
        self.start_server()
        self.register()

    def start_server(self) -> float:
        """Start aigrid and wait until /healthz answers; the seconds it took."""
        began = time.monotonic()
        self.server.start()
        deadline = began + SERVER_START_S
        with httpx.Client(base_url=self.base, timeout=2) as client:
            while not self._healthy(client):
                self.server.check()
                if time.monotonic() > deadline:
                    raise BenchError(f"aigrid did not answer in {SERVER_START_S:g} s; see {self.server.log}")
                time.sleep(0.2)
        self.key = (self.data_dir / "admin_key").read_text(encoding="utf-8").strip()
        return time.monotonic() - began

    @staticmethod
    def _healthy(client: httpx.Client) -> bool:
        try:
            return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def register(self) -> None:
        with self.client() as client:
            for name, manifest in self.manifests.items():
                path = SERVICES_DIR / f"{manifest}.manifest.json"
                body = {"name": name, "kind": "mcp", "url": self.urls[name]}
                body["manifest"] = json.loads(path.read_text(encoding="utf-8"))
                added = client.post("/admin/services", json=body)
                if added.status_code != 201:
                    raise BenchError(f"registering {name}: {added.status_code} {added.text}")

    def snapshot(self, previous: State | None = None) -> State:
        return snapshot(self.urls, previous=previous)

    def close(self) -> None:
        for child in [self.server, *self.services.values()]:
            child.stop()


def open_entries(client: httpx.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for state in OPEN_STATES:
        listed = client.get("/v1/entry", params={"state": state, "limit": 500})
        listed.raise_for_status()
        found += listed.json()["data"]
    return found


def ask(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/v1/entry", json=body)
    if answer.status_code != 200:
        raise BenchError(f"POST /v1/entry: {answer.status_code} {short(answer.text, 300)}")
    return dict(answer.json())


def run_in_scratch(prefix: str, keep: bool, run: Callable[[Path], int]) -> int:
    """``run(work)`` in a new scratch folder under bench/.work, removed unless kept or failed; its exit code.

    Ctrl-C (or a SIGTERM) stops it with 130 and cleans up as well.
    """
    (ROOT / "bench" / ".work").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=ROOT / "bench" / ".work"))
    code = 1
    # A shell starts a background job with SIGINT ignored; Ctrl-C (or kill -INT) must still clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with signals_raise():
        try:
            code = run(work)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            code = 130
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
        finally:
            if keep or code not in (0, 130):
                print(f"scratch and logs kept in {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
    return code


def settle(client: httpx.Client, entry: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """The entry once it has ended (or as it is after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while entry["state"] in OPEN_STATES and time.monotonic() < deadline:
        time.sleep(0.5)
        entry = client.get(f"/v1/entry/{entry['id']}").json()
    return entry
