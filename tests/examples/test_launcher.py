"""examples/services/run.py: starts the five services, registers them with aigrid, and stops them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.support import ADMIN_KEY, LiveServer, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "examples" / "services"
SEED = Path(os.environ.get("AIGRID_SHARED", ROOT.parent / "shared")) / "fixtures" / "services"
NAMES = ["northwind", "lakeside", "payment", "travel", "food"]
MANIFEST = {name: "shop" if name in ("northwind", "lakeside") else name for name in NAMES}


class Launcher:
    """run.py against a live aigrid server, its stderr in a file."""

    def __init__(self, data_dir: Path, ports: list[int], server: LiveServer, key_file: Path | None) -> None:
        argv = [sys.executable, str(SERVICES / "run.py"), "--data-dir", str(data_dir), "--seed", str(SEED)]
        argv += ["--ports", ",".join(map(str, ports)), "--aigrid", server.url]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("AIGRID_ADMIN_KEY", None)
        if key_file is None:
            env["AIGRID_ADMIN_KEY"] = ADMIN_KEY
        else:
            argv += ["--admin-key-file", str(key_file)]
        self.stderr = data_dir.parent / f"{data_dir.name}-run-{time.monotonic_ns()}.log"
        with self.stderr.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_registered(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"run.py exited with {self.proc.returncode}:\n{self.output()}")
            if "up and registered with aigrid" in self.output():
                return self.output()
            time.sleep(0.2)
        raise AssertionError(f"run.py did not register the services:\n{self.output()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def free_ports() -> list[int]:
    ports: list[int] = []
    while len(ports) < len(NAMES):
        ports += [port for port in [free_port()] if port not in ports]
    return ports


def listed(server: LiveServer) -> list[dict[str, Any]]:
    answer = server.admin("GET", "/v1/services")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def assert_registered_up(server: LiveServer, ports: list[int]) -> None:
    services = listed(server)
    assert [s["name"] for s in services] == sorted(NAMES), "each service registered once"
    for service in services:
        port = ports[NAMES.index(service["name"])]
        assert (service["status"], service["error"]) == ("up", None), service
        assert service["source"] == f"mcp http://127.0.0.1:{port}/mcp"
        manifest = json.loads((SERVICES / f"{MANIFEST[service['name']]}.manifest.json").read_text())
        assert service["category"] == manifest["category"]
        assert {op["name"] for op in service["operations"]} == set(manifest["operations"])


def closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def test_run_starts_registers_and_stops_the_services(tmp_path: Path, server: LiveServer) -> None:
    data_dir = tmp_path / "services"
    ports = free_ports()
    launchers: list[Launcher] = []
    try:
        # First start: every service comes up and is registered with its manifest.
        launchers.append(Launcher(data_dir, ports, server, key_file=None))
        line = launchers[-1].wait_registered()
        assert all(
            f"{name} http://127.0.0.1:{port}/mcp" in line for name, port in zip(NAMES, ports, strict=True)
        )
        assert_registered_up(server, ports)
        assert {p.name for p in data_dir.glob("*.db")} == {
            "shop-northwind.db",
            "shop-lakeside.db",
            "payment.db",
            "travel.db",
            "food.db",
        }
        assert {p.name for p in data_dir.glob("*.log")} == {f"{name}.log" for name in NAMES}
        # It teaches the server's experience memory this world's training examples, for every tenant.
        deadline = time.monotonic() + 120
        taught: list[dict[str, object]] = []
        while time.monotonic() < deadline and not taught:
            memory = server.admin("GET", "/v1/learn/memory", params={"kind": "plan", "limit": 5})
            taught = memory.json()["data"]
            time.sleep(0.5)
        assert taught and all(e["shared"] and e["source"] == "suite:entry" for e in taught), launchers[
            -1
        ].output()

        # SIGTERM stops every service, and run.py exits 0.
        assert launchers[-1].stop() == 0, launchers[-1].output()
        assert all(closed(port) for port in ports)

        # Started again against the same server: still registered once, and up.
        key_file = tmp_path / "admin_key"
        key_file.write_text(ADMIN_KEY + "\n")
        launchers.append(Launcher(data_dir, ports, server, key_file=key_file))
        assert "registering" not in launchers[-1].wait_registered(), "listed up: left as it is"
        assert_registered_up(server, ports)
        assert launchers[-1].stop() == 0, launchers[-1].output()

        # A server restarted while the services were down lists them down; run.py brings them back up.
        server.stop()
        server.start()
        assert {s["status"] for s in listed(server)} == {"down"}
        launchers.append(Launcher(data_dir, ports, server, key_file=key_file))
        assert "registering northwind again: it was down" in launchers[-1].wait_registered()
        assert_registered_up(server, ports)
        assert launchers[-1].stop() == 0, launchers[-1].output()
        assert all(closed(port) for port in ports)
    finally:
        for launcher in launchers:
            if launcher.proc.poll() is None:
                launcher.stop()


def test_a_service_that_dies_stops_the_others(tmp_path: Path, server: LiveServer) -> None:
    ports = free_ports()
    launcher = Launcher(tmp_path / "services", ports, server, key_file=None)
    try:
        launcher.wait_registered()
        assert_registered_up(server, ports)  # at these ports, whatever was registered before
        children = subprocess.run(
            ["ps", "-ww", "--ppid", str(launcher.proc.pid), "-o", "pid=,args="],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        payment = next(line for line in children.splitlines() if "payment.py" in line)
        os.kill(int(payment.split()[0]), signal.SIGKILL)
        assert launcher.proc.wait(timeout=30) == 1
        assert "payment exited" in launcher.output()
        assert all(closed(port) for port in ports)
    finally:
        if launcher.proc.poll() is None:
            launcher.stop()
