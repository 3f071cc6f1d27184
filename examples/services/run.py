"""Start the five example services and, with ``--aigrid URL``, register them with that aigrid server.

    python examples/services/run.py --data-dir /tmp/aigrid-services --aigrid http://127.0.0.1:8700

Each service is a child process (northwind 8801, lakeside 8802, payment 8810, travel 8820, food 8830),
its database and log (``<name>.log``) in ``--data-dir``, its world from ``--seed DIR`` (default
``$AIGRID_SHARED/fixtures/services`` when AIGRID_SHARED is set, else the project's own in ``seed/``).
With ``--aigrid`` it waits for that server and registers each service not listed up there, with the
manifest beside it, then teaches that server's experience memory the training splits of its suites
(in the background; each example the verifier accepts against these services is shown to every
tenant's plans and compiles, and teaching again adds only what is new). The entry suite is made
from the shared world, so on the services' own world only the compiler and tools suites, which call
no service, are taught. It runs until SIGINT or SIGTERM (or that server is gone for a minute), then
stops the services; one that dies stops the rest (exit 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
# Each service's name, and its script and arguments; --ports gives their ports in this order.
SERVICES = (
    ("northwind", ("shop.py", "--shop", "northwind")),
    ("lakeside", ("shop.py", "--shop", "lakeside")),
    ("payment", ("payment.py",)),
    ("travel", ("travel.py",)),
    ("food", ("food.py",)),
)
DEFAULT_PORTS = "8801,8802,8810,8820,8830"
AIGRID_WAIT_S = 120.0  # how long the aigrid server may take to answer at first
AIGRID_GONE_S = 60.0  # the aigrid server silent this long: stop the services and exit
TAUGHT_SUITES = ("entry", "compiler", "tools")
# The entry suite's plans name the shared world's goods: on the services' own world none would hold.
OWN_WORLD_SUITES = ("compiler", "tools")
TEACH_TIMEOUT_S = 3600.0  # teaching reads every training task from the services: minutes
log = logging.getLogger("services")
_signals: list[int] = []


class LaunchError(Exception):
    """What stops the launcher, with the reason."""


@dataclass
class Service:
    """One service and, once started, its process; its manifest is ``<script>.manifest.json``."""

    name: str
    script: tuple[str, ...]
    port: int
    proc: subprocess.Popen[bytes] | None = None


def pause(seconds: float) -> bool:
    """Sleep up to ``seconds``; True as soon as SIGINT or SIGTERM asked the launcher to stop."""
    deadline = time.monotonic() + seconds
    while not _signals and time.monotonic() < deadline:
        time.sleep(0.1)
    return bool(_signals)


def check(running: list[Service], data_dir: Path) -> None:
    """A ``LaunchError`` for the first service that has exited, with the end of its log."""
    for service in running:
        if service.proc is not None and service.proc.poll() is not None:
            log_file = data_dir / f"{service.name}.log"
            tail = log_file.read_text(errors="replace")[-2000:]
            raise LaunchError(f"{service.name} exited ({service.proc.returncode}); {log_file}:\n{tail}")


def listens(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_all(running: list[Service], opts: argparse.Namespace) -> None:
    """Start every service (the same Python, its output to its log) and wait until each listens."""
    if busy := [f"{s.port} ({s.name})" for s in running if listens(opts.connect_host, s.port)]:
        raise LaunchError(f"ports in use: {', '.join(busy)}")
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    for service in running:
        script, *args = service.script
        argv = [sys.executable, str(HERE / script), *args, "--host", opts.host, "--port", str(service.port)]
        argv += ["--data-dir", str(opts.data_dir)] + (["--seed", str(opts.seed)] if opts.seed else [])
        with (opts.data_dir / f"{service.name}.log").open("ab") as out:
            service.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline, waiting = time.monotonic() + 60, running
    while waiting and not pause(0.1):
        check(running, opts.data_dir)
        waiting = [s for s in waiting if not listens(opts.connect_host, s.port)]
        if time.monotonic() > deadline:
            raise LaunchError(f"not listening after 60 s: {', '.join(s.name for s in waiting)}")


def answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def admin_key(key_file: Path | None) -> str | None:
    """The admin key as the server takes it: AIGRID_ADMIN_KEY, else the file (once the server wrote it)."""
    stored = key_file.read_text(encoding="utf-8").strip() if key_file and key_file.exists() else None
    return os.environ.get("AIGRID_ADMIN_KEY") or stored or None


def register(client: httpx.Client, running: list[Service], urls: dict[str, str]) -> None:
    """Add each service not listed up at its URL; one listed down (or elsewhere) is removed first."""
    known = {s["name"]: s for s in client.get("/v1/services").raise_for_status().json()["data"]}
    for service in running:
        have = known.get(service.name)
        if have is not None and (have["status"], have["source"]) == ("up", f"mcp {urls[service.name]}"):
            continue
        if have is not None:  # aigrid does not retry a kept service that was down when it started
            log.info("registering %s again: it was %s at %s", service.name, have["status"], have["source"])
            client.delete(f"/admin/services/{service.name}")
        manifest_file = HERE / service.script[0].replace(".py", ".manifest.json")
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        body = {"name": service.name, "kind": "mcp", "url": urls[service.name], "manifest": manifest}
        added = client.post("/admin/services", json=body)
        if added.status_code != 201:
            raise LaunchError(f"registering {service.name}: {added.status_code} {added.text}")


def teach(client: httpx.Client, suites: tuple[str, ...]) -> None:
    """Teach the server's experience memory these suites' training splits, for all its tenants."""
    for suite in suites:
        try:
            taught = client.post("/v1/learn/memory/teach", json={"suite": suite}, timeout=TEACH_TIMEOUT_S)
        except httpx.HTTPError as exc:
            log.warning("teaching the %s suite failed: %s", suite, exc)
            continue
        if taught.status_code != 200:
            log.warning("teaching the %s suite failed: %s %s", suite, taught.status_code, taught.text[:300])
            continue
        done = taught.json()
        log.info(
            "experience memory: %d %s example(s) taught, %d already kept, %d refused by the verifier",
            done["taught"],
            suite,
            done["already"],
            done["refused"],
        )


def run(opts: argparse.Namespace, running: list[Service]) -> int:
    start_all(running, opts)
    urls = {s.name: f"http://{opts.connect_host}:{s.port}/mcp" for s in running}
    client = httpx.Client(base_url=opts.aigrid.rstrip("/"), timeout=60) if opts.aigrid else None
    deadline = time.monotonic() + AIGRID_WAIT_S
    while client is not None and not (key := admin_key(opts.admin_key_file) if answers(client) else None):
        check(running, opts.data_dir)
        if pause(0.5):
            return 0
        if time.monotonic() > deadline:
            raise LaunchError(f"aigrid at {opts.aigrid} did not answer (with an admin key) in 120 s")
    if client is not None:
        client.headers["Authorization"] = f"Bearer {key}"
        register(client, running, urls)
        if opts.teach:
            own = opts.seed is None and not os.environ.get("AIGRID_SHARED")
            suites = OWN_WORLD_SUITES if own else TAUGHT_SUITES
            threading.Thread(target=teach, args=(client, suites), name="teach", daemon=True).start()
    listing = ", ".join(f"{name} {url}" for name, url in urls.items())
    log.info("up%s: %s", f" and registered with aigrid at {opts.aigrid}" if client else "", listing)
    last_answer = time.monotonic()
    while not pause(1):
        check(running, opts.data_dir)
        if client is not None and answers(client):
            last_answer = time.monotonic()
        elif client is not None and time.monotonic() - last_answer > AIGRID_GONE_S:
            log.info("aigrid at %s stopped answering; stopping the services", opts.aigrid)
            break
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address the services listen on")
    parser.add_argument("--data-dir", type=Path, required=True, help="the services' databases and logs")
    parser.add_argument("--seed", type=Path, help="folder of the seed JSON (default: each service's default)")
    names = "ports of northwind, lakeside, payment, travel, food"
    parser.add_argument("--ports", default=DEFAULT_PORTS, help=f"{names} (default {DEFAULT_PORTS})")
    parser.add_argument("--aigrid", help="an aigrid server to register them with: http://127.0.0.1:8700")
    parser.add_argument("--admin-key-file", type=Path, help="its admin key (AIGRID_ADMIN_KEY comes first)")
    parser.add_argument(
        "--no-teach", dest="teach", action="store_false", help="do not teach its experience memory"
    )
    opts = parser.parse_args()
    ports = [int(p) for p in opts.ports.split(",") if p.strip().isdigit()]
    if len(ports) != len(SERVICES):
        parser.error(f"--ports takes the {names}, separated by commas")
    if opts.aigrid and opts.admin_key_file is None and not os.environ.get("AIGRID_ADMIN_KEY"):
        parser.error("--aigrid needs --admin-key-file or AIGRID_ADMIN_KEY")
    opts.connect_host = "127.0.0.1" if opts.host in ("0.0.0.0", "::", "") else opts.host
    logging.basicConfig(level=logging.WARNING, format="services: %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    # Set explicitly: a shell starts a background job with SIGINT ignored, and Ctrl-C must still stop it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda got, _frame: _signals.append(got))
    running = [Service(*spec, port) for spec, port in zip(SERVICES, ports, strict=True)]
    try:
        return run(opts, running)
    except (LaunchError, httpx.HTTPError) as exc:
        log.error("%s", exc)
        return 1
    finally:  # SIGTERM to the services still running, then SIGKILL to any still there after 5 s
        alive = [s.proc for s in running if s.proc is not None and s.proc.poll() is None]
        for proc in alive:
            proc.terminate()
        for proc in alive:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
