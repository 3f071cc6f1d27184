"""examples/cluster: the balancer configs are valid, and run.py brings up three live nodes behind one."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from tests.postgres import unavailable
from tests.support import ADMIN_KEY, mock_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster"
SBIN = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def _launcher() -> ModuleType:
    """examples/cluster/run.py as a module (it is a script, not a package)."""
    name = "cluster_example_run"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE / "run.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up while they are built
        spec.loader.exec_module(module)
    return sys.modules[name]


def _tool(name: str) -> str:
    found = shutil.which(name, path=SBIN)
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install -y {name})")
    return found


NODES = ["127.0.0.1:18701", "127.0.0.1:18702", "127.0.0.1:18703"]


def test_the_haproxy_config_is_valid(tmp_path: Path) -> None:
    haproxy = _tool("haproxy")
    env = {**os.environ, **_launcher().haproxy_env("127.0.0.1:18700", NODES)}
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(EXAMPLE / "haproxy.cfg")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_nginx_config_is_valid(tmp_path: Path) -> None:
    nginx = _tool("nginx")
    conf = tmp_path / "nginx.conf"
    text = _launcher().render_nginx(tmp_path, "127.0.0.1:18700", NODES)
    assert "${" not in text and "proxy_buffering off;" in text
    conf.write_text(text)
    checked = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_models_file_may_not_set_what_the_launcher_sets(tmp_path: Path) -> None:
    launcher = _launcher()
    models = tmp_path / "models.toml"
    models.write_text('database_url = "sqlite:///x.db"\n[cluster]\nnode = "a"\n')
    with pytest.raises(launcher.LaunchError, match="leave out database_url and cluster"):
        launcher.read_models(models)
    config = launcher.node_config('[[models]]\nname = "m"\n', "postgresql://db", "gw-1", "http://h:1", 6.0)
    assert config.startswith('database_url = "postgresql://db"')
    assert config.endswith('[cluster]\nnode = "gw-1"\naddress = "http://h:1"\nlease_s = 6\nrenew_s = 2\n')


def _free_run_of_ports(count: int) -> int:
    """A port p with p..p+count-1 all free right now."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            for port in range(base + 1, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no run of free ports")


@pytest.mark.slow
def test_the_launcher_brings_up_three_live_nodes_behind_a_balancer(
    mock_upstream: str, tmp_path: Path
) -> None:
    launcher = _launcher()
    if launcher.postgres_bin_dir() is None:
        unavailable("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root, and there is no postgres user to run PostgreSQL as")
    models = tmp_path / "models.toml"
    models.write_text(mock_config(mock_upstream))
    port = _free_run_of_ports(4)
    out = tmp_path / "run.out"
    argv = [sys.executable, str(EXAMPLE / "run.py"), "--models", str(models), "--port", str(port)]
    argv += ["--workdir", str(tmp_path / "cluster"), "--lease-s", "6"]
    env = {**os.environ, "AIGRID_ADMIN_KEY": ADMIN_KEY, "PYTHONDONTWRITEBYTECODE": "1"}
    with out.open("wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "ready:" not in out.read_text():
            assert proc.poll() is None, f"run.py exited with {proc.returncode}:\n{out.read_text()}"
            assert time.monotonic() < deadline, f"run.py was not ready in time:\n{out.read_text()}"
            time.sleep(0.2)
        printed = out.read_text()
        assert "ready: 3 of 3 nodes live" in printed, printed
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        for i in (1, 2, 3):
            seen = httpx.get(f"http://127.0.0.1:{port + i}/admin/cluster", headers=admin, timeout=10).json()
            assert {n["name"]: n["live"] for n in seen["data"]} == {"gw-1": True, "gw-2": True, "gw-3": True}
            assert seen["node"] == f"gw-{i}"
            addresses = {n["name"]: n["address"] for n in seen["data"]}
            assert addresses[f"gw-{i}"] == f"http://127.0.0.1:{port + i}"
        # "load balancer: haproxy on ..." when one runs; "no load balancer: ..." is the hint.
        balanced = any(line.startswith("load balancer: ") for line in printed.splitlines())
        front = f"http://127.0.0.1:{port}" if balanced else f"http://127.0.0.1:{port + 1}"
        if shutil.which("haproxy", path=SBIN) or shutil.which("nginx", path=SBIN):
            assert balanced, printed
        else:
            assert "apt-get install -y haproxy" in printed, printed
        body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(6):
            answer = httpx.post(f"{front}/v1/chat/completions", json=body, headers=admin, timeout=30)
            assert answer.status_code == 200, answer.text
        streamed = httpx.post(
            f"{front}/v1/chat/completions", json={**body, "stream": True}, headers=admin, timeout=30
        )
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=90)
    assert code == 0, out.read_text()
    assert "stopping" in out.read_text()
    # Everything it started went with it: nothing listens on the four ports any more.
    for p in range(port, port + 4):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", p)) != 0, f"something still listens on {p}"


def test_without_a_balancer_installed_the_launcher_runs_the_nodes_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launcher = _launcher()
    monkeypatch.setattr(launcher.shutil, "which", lambda *_a, **_k: None)
    assert launcher.balancer_kind("auto") is None
    assert launcher.balancer_kind("none") is None
    assert "apt-get install -y haproxy" in launcher.INSTALL_HINT
    with pytest.raises(launcher.LaunchError, match=r"nginx is not installed \(apt-get install -y nginx\)"):
        launcher.balancer_kind("nginx")
