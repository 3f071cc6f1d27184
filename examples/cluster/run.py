"""Three aigrid servers on one throwaway PostgreSQL, behind a load balancer: a cluster on one machine.

    python examples/cluster/run.py                          # the embedded model on every node
    python examples/cluster/run.py --models my-models.toml  # your [[models]] on every node

It starts, all under one working folder (a temporary one unless --workdir names it):

* PostgreSQL from Debian's server binaries (/usr/lib/postgresql/<version>/bin, or pg_ctl on the
  PATH), initialised in a temporary folder and listening on 127.0.0.1 only; --database-url uses a
  server of your own instead;
* three ``aigrid serve`` nodes, gw-1, gw-2 and gw-3, on ports 8701-8703 (``--port`` + 1..3), each
  with its own data directory and config (``database_url`` and ``[cluster] node``), all with the
  same AIGRID_ADMIN_KEY (yours, or a new one it prints);
* HAProxy on ``--port`` (8700) with haproxy.cfg beside this file, or nginx with nginx.conf when
  HAProxy is missing, or no balancer (it says how to install one) when neither is installed.

Once every node is live it prints the cluster as ``aigrid cluster`` does and a line starting with
``ready:``, then runs until Ctrl-C or SIGTERM, and stops everything it started. A node that dies is
reported and left dead (kill one to watch the others carry on); PostgreSQL or the balancer dying
stops the rest (exit 1).
"""

from __future__ import annotations

import argparse
import glob
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx

HERE = Path(__file__).resolve().parent
NODES = ("gw-1", "gw-2", "gw-3")
HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0  # the embedded model loads at start: on a busy 2-core machine, a while


class LaunchError(Exception):
    """What stops the launcher, with the reason."""


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def postgres_bin_dir() -> Path | None:
    """Debian's newest server binaries, else the folder of the pg_ctl on the PATH."""

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(found) / "initdb").exists() and (Path(found) / "pg_ctl").exists():
            return Path(found)
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and shutil.which("initdb", path=str(Path(pg_ctl).parent)):
        return Path(pg_ctl).parent
    return None


class Postgres:
    """A PostgreSQL server in a folder of its own, trusting local connections, on a free port."""

    def __init__(self, port: int | None = None) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise LaunchError(
                "PostgreSQL's server binaries are not installed (apt-get install postgresql), "
                "or use --database-url"
            )
        self.bin_dir = bin_dir
        # A folder of its own under /tmp: as root, the postgres user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="aigrid-cluster-pg-"))
        self.data = self.root / "data"
        self.port = port or free_port()
        # PostgreSQL refuses to run as root: its tools then run as the postgres user.
        self._as_root = os.geteuid() == 0
        self.started = False

    def start(self) -> None:
        """initdb, start, and create the database ``aigrid``."""
        if self._as_root:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "aigrid", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses={HOST}"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.root / "log"), "-o", options, "start")
        self.started = True
        import psycopg

        where = f"host={HOST} port={self.port} user=aigrid dbname=postgres"
        with psycopg.connect(where, autocommit=True) as conn:
            conn.execute("CREATE DATABASE aigrid")

    @property
    def url(self) -> str:
        """The SQLAlchemy URL every node is given."""
        return f"postgresql+psycopg://aigrid@{HOST}:{self.port}/aigrid"

    def running(self) -> bool:
        """Whether the server still answers (pg_ctl status)."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "status")
        except LaunchError:
            return False
        return True

    def stop(self) -> None:
        """Stop at once and throw the data away."""
        if self.started:
            with suppress(LaunchError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_root:
            quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in command)
            command = ["su", "postgres", "-s", "/bin/sh", "-c", quoted]
        done = subprocess.run(command, check=False, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise LaunchError(f"{tool} failed: {done.stderr.decode(errors='replace').strip()}")


# ---------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """A process this launcher started, in its own session, with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    reported: bool = False

    def tail(self, lines: int = 20) -> str:
        """The end of what it printed."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM (a graceful stop: an aigrid node ends its lease), then SIGKILL."""
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def spawn(name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> Child:
    """Start ``argv`` in a session of its own (Ctrl-C reaches only the launcher, which stops it)."""
    log = log_path.open("ab")
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    return Child(name, proc, log_path, log)


# ---------------------------------------------------------------------------------------------
# nodes


def read_models(path: Path | None) -> str:
    """The TOML every node's config starts from: yours (without database_url or [cluster]) or none."""
    if path is None:
        return ""
    text = path.read_text(encoding="utf-8")
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LaunchError(f"{path}: not valid TOML: {exc}") from exc
    clash = [k for k in ("database_url", "cluster") if k in parsed]
    if clash:
        raise LaunchError(f"{path}: leave out {' and '.join(clash)}: the launcher sets them for each node")
    return text


def node_config(models: str, database_url: str, name: str, address: str, lease_s: float | None) -> str:
    """A node's config: the shared database first (a top-level key), then the models, then [cluster]."""
    cluster = f'[cluster]\nnode = "{name}"\naddress = "{address}"\n'
    if lease_s is not None:
        cluster += f"lease_s = {lease_s:g}\nrenew_s = {lease_s / 3:g}\n"
    return f'database_url = "{database_url}"\n\n{models.strip()}\n\n{cluster}'


@dataclass
class Node:
    """One ``aigrid serve`` of the cluster."""

    name: str
    port: int
    data_dir: Path
    child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def start_node(node: Node, config: str, admin_key: str) -> None:
    """Write the node's config into its data directory and start it."""
    node.data_dir.mkdir(parents=True, exist_ok=True)
    path = node.data_dir / "aigrid.toml"
    path.write_text(config, encoding="utf-8")
    argv = [sys.executable, "-m", "aigrid", "serve", "--config", str(path), "--host", HOST]
    argv += ["--port", str(node.port), "--data-dir", str(node.data_dir), "--cluster", node.name]
    env = {**os.environ, "AIGRID_ADMIN_KEY": admin_key}
    node.child = spawn(node.name, argv, node.data_dir / "server.log", env)


def healthy(url: str) -> bool:
    """GET /healthz answers 200 (the node is up and holds its lease)."""
    try:
        return httpx.get(url + "/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(nodes: list[Node], timeout_s: float) -> None:
    """Until every node's /healthz answers 200; a node that exits first fails the start."""
    deadline = time.monotonic() + timeout_s
    waiting = list(nodes)
    while waiting:
        for node in list(waiting):
            assert node.child is not None
            if node.child.proc.poll() is not None:
                raise LaunchError(
                    f"{node.name} exited with status {node.child.proc.returncode}:\n{node.child.tail()}"
                )
            if healthy(node.url):
                waiting.remove(node)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(n.name for n in waiting)
            raise LaunchError(f"{names} did not answer /healthz within {timeout_s:g} s")
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# the load balancer

INSTALL_HINT = (
    "no load balancer: neither haproxy nor nginx is installed. Install one to put the three nodes "
    "behind one port:\n    sudo apt-get install -y haproxy     # or: nginx\n"
    "and run this again; meanwhile use the nodes' own URLs."
)


def balancer_kind(choice: str) -> str | None:
    """haproxy, nginx or None: what --balancer asks for and this machine has."""
    if choice == "none":
        return None
    for kind in ("haproxy", "nginx") if choice == "auto" else (choice,):
        if shutil.which(kind, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            return kind
    if choice != "auto":
        raise LaunchError(f"{choice} is not installed (apt-get install -y {choice})")
    return None


def haproxy_env(bind: str, nodes: list[str]) -> dict[str, str]:
    """The variables haproxy.cfg reads: where to listen and the three nodes' host:port."""
    env = {"AIGRID_LB_BIND": bind}
    env.update({f"AIGRID_NODE_{i}": where for i, where in enumerate(nodes, 1)})
    return env


def render_nginx(prefix: Path, bind: str, nodes: list[str]) -> str:
    """nginx.conf with its ${...} fields filled in (nginx's own $variables are left alone)."""
    fields = {"PREFIX": str(prefix), "LB_BIND": bind}
    fields.update({f"NODE_{i}": where for i, where in enumerate(nodes, 1)})
    return string.Template((HERE / "nginx.conf").read_text(encoding="utf-8")).safe_substitute(fields)


def balancer_argv(kind: str, workdir: Path, bind: str, nodes: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command that runs the balancer in the foreground, and its environment."""
    exe = shutil.which(kind, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or kind
    if kind == "haproxy":
        # -db: stay in the foreground, so that the launcher owns the process and sees it die.
        return [exe, "-db", "-f", str(HERE / "haproxy.cfg")], {**os.environ, **haproxy_env(bind, nodes)}
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx(prefix, bind, nodes), encoding="utf-8")
    return [exe, "-c", str(conf), "-p", str(prefix)], dict(os.environ)


# ---------------------------------------------------------------------------------------------
# main


@dataclass
class Cluster:
    """Everything one run started, stopped in reverse order."""

    postgres: Postgres | None = None
    nodes: list[Node] = field(default_factory=list)
    balancer: Child | None = None

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        for node in self.nodes:
            if node.child is not None:
                node.child.stop()
        if self.postgres is not None:
            self.postgres.stop()


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the launcher the way Ctrl-C does."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def show_cluster(url: str, admin_key: str) -> dict[str, Any]:
    """GET /admin/cluster through ``url``, printed as `aigrid cluster` prints it."""
    answer = httpx.get(url + "/admin/cluster", headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    try:
        from rich.console import Console

        from aigrid.cli.cluster import nodes

        Console(width=120).print(nodes(result))
    except ImportError:  # the table is a nicety; the JSON says the same
        print(result)
    return result


def launch(args: argparse.Namespace, cluster: Cluster, workdir: Path) -> None:
    """Start PostgreSQL, the nodes and the balancer, and print where they are."""
    models = read_models(args.models)
    admin_key = os.environ.get("AIGRID_ADMIN_KEY") or "sk-admin-" + secrets.token_hex(16)
    database_url = args.database_url
    if database_url is None:
        cluster.postgres = Postgres()
        cluster.postgres.start()
        print(f"PostgreSQL ({cluster.postgres.bin_dir}) on {HOST}:{cluster.postgres.port}", flush=True)
    else:
        print(f"PostgreSQL: {database_url}", flush=True)
    url = database_url or (cluster.postgres.url if cluster.postgres else "")
    for i, name in enumerate(NODES, 1):
        node = Node(name, args.port + i, workdir / name)
        cluster.nodes.append(node)
        start_node(node, node_config(models, url, name, node.url, args.lease_s), admin_key)
        if i == 1:
            # The first node creates the schema; servers migrating a fresh database at the same
            # moment would race to create the same tables.
            wait_ready(cluster.nodes, args.start_timeout)
    wait_ready(cluster.nodes, args.start_timeout)
    for node in cluster.nodes:
        assert node.child is not None
        print(f"{node.name}: {node.url} (pid {node.child.proc.pid}, log {node.child.log_path})", flush=True)
    front = cluster.nodes[0].url
    kind = balancer_kind(args.balancer)
    if kind is None:
        print(INSTALL_HINT if args.balancer == "auto" else "no load balancer (--balancer none)", flush=True)
    else:
        bind = f"{HOST}:{args.port}"
        argv, env = balancer_argv(kind, workdir, bind, [f"{HOST}:{n.port}" for n in cluster.nodes])
        cluster.balancer = spawn(kind, argv, workdir / f"{kind}.log", env)
        front = f"http://{bind}"
        deadline = time.monotonic() + 30
        while not healthy(front):
            if cluster.balancer.proc.poll() is not None or time.monotonic() > deadline:
                raise LaunchError(f"{kind} did not start:\n{cluster.balancer.tail()}")
            time.sleep(0.2)
        print(f"load balancer: {kind} on {front} (log {cluster.balancer.log_path})", flush=True)
    result = show_cluster(front, admin_key)
    live = sum(1 for n in result["data"] if n["live"])
    print(f"admin key: {admin_key}", flush=True)
    print(f"ready: {live} of {len(NODES)} nodes live; send requests to {front}/v1", flush=True)


def watch(cluster: Cluster) -> None:
    """Until a signal: report a node that dies; PostgreSQL or the balancer dying ends the run."""
    while True:
        time.sleep(0.5)
        for node in cluster.nodes:
            child = node.child
            if child is not None and not child.reported and child.proc.poll() is not None:
                child.reported = True
                print(f"{node.name} exited (status {child.proc.returncode}); the others carry on", flush=True)
        if cluster.balancer is not None and cluster.balancer.proc.poll() is not None:
            raise LaunchError(f"{cluster.balancer.name} exited:\n{cluster.balancer.tail()}")
        if cluster.postgres is not None and not cluster.postgres.running():
            raise LaunchError("PostgreSQL stopped")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8700, help="the balancer's port; nodes on the next 3")
    parser.add_argument("--models", type=Path, help="TOML with [[models]] for every node (default: embedded)")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of starting one")
    parser.add_argument("--balancer", choices=("auto", "haproxy", "nginx", "none"), default="auto")
    parser.add_argument("--lease-s", type=float, help="[cluster] lease_s for every node (default: 15)")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary folder)")
    parser.add_argument("--start-timeout", type=float, default=START_TIMEOUT_S, help="seconds (180)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aigrid-cluster-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster()
    status = 0
    try:
        with signals_raise():
            launch(args, cluster, workdir)
            watch(cluster)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    except (LaunchError, httpx.HTTPError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        # A second Ctrl-C or SIGTERM must not leave the children running half-stopped.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        cluster.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
