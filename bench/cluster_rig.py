"""What bench/cluster.py's phases share: PostgreSQL, the mock upstream, aigrid servers on one database."""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psutil
import psycopg

from gateway import Processes, free_port, http_ok, wait_until
from processes import stop_process_group

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work" / "cluster"
HOST = "127.0.0.1"


class Children(Processes):
    """gateway.py's process list, where a server can also be stopped alone (a round's victim)."""

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        for entry in list(self._running):
            if entry[1] is proc:
                stop_process_group(proc)
                entry[2].close()
                self._running.remove(entry)


def start_mock(procs: Processes, shared: Path, name: str, delay_ms: int) -> tuple[str, int]:
    """The shared mock upstream on a free port: its base URL and pid."""
    port = free_port()
    argv = [sys.executable, str(shared / "mock_upstream.py"), "--host", HOST, "--port", str(port)]
    proc = procs.start(name, [*argv, "--delay-ms", str(delay_ms)])
    base = f"http://{HOST}:{port}"
    wait_until(name, proc, lambda: http_ok(f"{base}/v1/models"), 30, procs, name)
    return base, proc.pid


def example() -> ModuleType:
    """examples/cluster/run.py, for its throwaway PostgreSQL."""
    spec = importlib.util.spec_from_file_location(
        "cluster_example_run", REPO / "examples" / "cluster" / "run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# servers


@dataclass
class Server:
    """One `aigrid serve` of the bench."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass
class Rig:
    """What every phase shares: the processes, PostgreSQL, the mocks and the admin key."""

    procs: Children
    pg: Any  # examples/cluster/run.py's Postgres
    fast: str  # base URL of the fast mock
    slow: str  # base URL of the mock that does not answer within a round
    admin_key: str = field(default_factory=lambda: "sk-admin-" + secrets.token_hex(16))
    databases: int = 0

    def new_database(self) -> str:
        self.databases += 1
        name = f"bench{self.databases}"
        with psycopg.connect(
            f"host={HOST} port={self.pg.port} user=aigrid dbname=postgres", autocommit=True
        ) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://aigrid@{HOST}:{self.pg.port}/{name}"

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}


def server_config(rig: Rig, database_url: str, node: str, lease_s: float | None) -> str:
    models = ""
    for name, base in (("mock", rig.fast), ("slow", rig.slow)):
        models += f"""
[[models]]
name = "{name}"
[[models.deployments]]
backend = "openai"
base_url = "{base}/v1"
upstream_model = "mock"
input_price_per_mtok = 0.8
output_price_per_mtok = 2.0
"""
    cluster = f'[cluster]\nnode = "{node}"\n'
    if lease_s is not None:
        cluster += f"lease_s = {lease_s:g}\nrenew_s = {lease_s / 3:g}\n"
    return f'database_url = "{database_url}"\n{models}\n{cluster}'


def start_server(rig: Rig, database_url: str, node: str, lease_s: float | None) -> Server:
    """Start one server and wait until its /healthz answers 200."""
    data_dir = WORK / "data" / f"{node}-{time.monotonic_ns()}"
    data_dir.mkdir(parents=True)
    config = data_dir / "aigrid.toml"
    config.write_text(server_config(rig, database_url, node, lease_s), encoding="utf-8")
    port = free_port()
    argv = [sys.executable, "-m", "aigrid", "serve", "--config", str(config), "--host", HOST]
    argv += ["--port", str(port), "--data-dir", str(data_dir)]
    proc = rig.procs.start(node, argv, {**os.environ, "AIGRID_ADMIN_KEY": rig.admin_key})
    server = Server(node, port, proc)
    deadline = time.monotonic() + 120
    while not ok(server.url + "/healthz"):
        if proc.poll() is not None:
            raise RuntimeError(f"{node} exited with {proc.returncode}:\n{rig.procs.log_tail(node)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node} did not start:\n{rig.procs.log_tail(node)}")
        time.sleep(0.1)
    return server


def start_servers(rig: Rig, database_url: str, names: list[str], lease_s: float | None) -> list[Server]:
    """The first server alone (it creates the schema: concurrent first starts race), then the rest at once."""
    first = start_server(rig, database_url, names[0], lease_s)
    with ThreadPoolExecutor(len(names)) as pool:
        rest = list(pool.map(lambda n: start_server(rig, database_url, n, lease_s), names[1:]))
    return [first, *rest]


def stop_servers(rig: Rig, servers: list[Server]) -> None:
    for server in servers:
        rig.procs.stop(server.proc)


def ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def tenant_key(rig: Rig, servers: list[Server], tenant: str) -> str:
    """A new tenant key made on the first server, once every server accepts it (config sync)."""
    first = servers[0].url
    r = httpx.post(f"{first}/admin/tenants", json={"name": tenant}, headers=rig.admin(), timeout=10)
    if r.status_code not in (200, 201, 409):
        raise RuntimeError(f"POST /admin/tenants answered {r.status_code}: {r.text[:300]}")
    r = httpx.post(f"{first}/admin/keys", json={"tenant": tenant}, headers=rig.admin(), timeout=10)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"POST /admin/keys answered {r.status_code}: {r.text[:300]}")
    key = str(r.json()["key"])
    wait_for(
        lambda: all(ok(s.url + "/v1/models", {"Authorization": f"Bearer {key}"}) for s in servers), 30, "key"
    )
    return key


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)
