"""A throwaway PostgreSQL server in a temporary folder, for the tests that need a real one.

The server binaries come from Debian's packages (/usr/lib/postgresql/<version>/bin, what `make
test` installs when missing) or from wherever pg_ctl is on the PATH. Without them the tests
skip, unless AIGRID_REQUIRE_POSTGRES is set (`make test` sets it): then they fail, so CI cannot
pass without running them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from tests.support import free_port

REQUIRED = "AIGRID_REQUIRE_POSTGRES"


def _bin_dir() -> Path | None:
    """Debian's newest server binaries, else the folder of the pg_ctl on the PATH."""
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if (Path(found) / "initdb").exists() and (Path(found) / "pg_ctl").exists():
            return Path(found)
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and shutil.which("initdb", path=str(Path(pg_ctl).parent)):
        return Path(pg_ctl).parent
    return None


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def unavailable(reason: str) -> None:
    """Skip the test, or fail it where PostgreSQL is required."""
    if os.environ.get(REQUIRED):
        pytest.fail(f"{reason}; {REQUIRED} is set, so the PostgreSQL tests may not skip")
    pytest.skip(reason)


class Postgres:
    """A PostgreSQL server of our own on a free port, trusting local connections."""

    def __init__(self, durable: bool = False) -> None:
        """Start one; ``durable`` keeps fsync on, as a production server runs (tests run without it)."""
        bin_dir = _bin_dir()
        if bin_dir is None:
            unavailable("PostgreSQL server binaries are not installed (apt-get install postgresql)")
            raise AssertionError("unreachable")
        # PostgreSQL refuses to run as root: its tools then run as the postgres user.
        self._as_root = os.geteuid() == 0
        if self._as_root and not _has_user("postgres"):
            unavailable("running as root, and there is no postgres user to run PostgreSQL as")
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="aigrid-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if self._as_root:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "aigrid", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        if not durable:
            options += " -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.root / "log"), "-o", options, "start")
        self._databases = 0

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_root:
            quoted = " ".join(_quote(a) for a in command)
            command = ["su", "postgres", "-s", "/bin/sh", "-c", quoted]
        done = subprocess.run(command, check=False, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.decode(errors='replace')}")

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of a database on this server."""
        return f"postgresql+psycopg://aigrid@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's URL (each test gets its own, so tests do not see each other's rows)."""
        import psycopg

        self._databases += 1
        name = f"t{self._databases}"
        where = f"host=127.0.0.1 port={self.port} user=aigrid dbname=postgres"
        with psycopg.connect(where, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once and remove its folder."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"
