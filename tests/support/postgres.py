"""A throwaway PostgreSQL server for tests, started from the installed server binaries.

The server runs in a private temp folder, listens on 127.0.0.1 on a free port, requires a
password (scram-sha-256) over TCP, and is removed afterwards. As root, it runs as ``nobody``
(PostgreSQL refuses to run as root). Without the binaries, the tests that need it skip and say
why. Import the fixtures into a test module:
``from pg import pg_database_fixture, pg_server_fixture``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PgServer", "find_bindir", "pg_database_fixture", "pg_server_fixture", "start_server"]

USER = "fluxmail"


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's versioned folders."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PgServer:
    """One PostgreSQL cluster in a temp folder; start(), stop(), url(), restartable."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.password = "pg-" + secrets.token_hex(12)
        self.port = _free_port()
        self.base = Path(tempfile.mkdtemp(prefix="fluxmail-pg-"))
        self.data = self.base / "data"
        self._as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        (self.base / "pw").write_text(self.password)
        if self._as_root:  # PostgreSQL refuses to run as root: hand the folder to nobody
            os.chmod(self.base, 0o700)
            for path in (self.base, self.base / "pw"):
                shutil.chown(path, "nobody", "nogroup" if _has_group("nogroup") else "nobody")

    def _run(self, *args: str) -> None:
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "LANG": "C"}
        kwargs: dict[str, Any] = {"user": "nobody"} if self._as_root else {}
        proc = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.base,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **kwargs,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stdout}\n{proc.stderr}")

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, f"--pwfile={self.base / 'pw'}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.base} -c fsync=off "
            "-c max_connections=60 -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres", *, with_password: bool = True) -> str:
        secret = f":{self.password}" if with_password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def start_server() -> PgServer:
    """Start a fresh server, or skip the test with the reason the binaries are missing."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under "
            "/usr/lib/postgresql/*/bin: install the 'postgresql' package to run these tests"
        )
    server = PgServer(bindir)
    try:
        server.init()
        server.start()
    except BaseException:
        server.remove()
        raise
    return server


@pytest.fixture(scope="session", name="pg_server")
def pg_server_fixture() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server per test process (xdist worker)."""
    server = start_server()
    yield server
    server.remove()


@pytest.fixture(name="pg_database")
def pg_database_fixture(pg_server: PgServer) -> Iterator[str]:
    """A URL (with password) to a fresh, empty database on the session server."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)
