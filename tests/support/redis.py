"""A throwaway Redis server for tests (the Celery adapter's broker and result backend).

``redis-server`` from the OS packages runs in a private temp folder, on 127.0.0.1 and a free
port, with persistence off (``--save '' --appendonly no``), and is stopped and removed
afterwards. Without the binary the tests that need it skip and say why. Import the fixtures
into a test module: ``from tests.support.redis import redis_server_fixture, redis_url_fixture``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_server_fixture", "redis_url_fixture", "start_redis"]

START_TIMEOUT = 20.0  # seconds for redis-server to answer PING


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process in a temp folder: start(), stop(), url(db)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.base = Path(tempfile.mkdtemp(prefix="fluxmail-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.base),
            "--daemonize", "no", "--databases", "16", "--logfile", str(self.base / "log"),
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, cwd=self.base, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = (self.base / "log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def flush(self) -> None:
        """Empty every database (each test starts with no queue, no result)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(16).startswith(b"+OK")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None
        shutil.rmtree(self.base, ignore_errors=True)


def start_redis() -> RedisServer:
    """Start a fresh server, or skip the test with the reason the binary is missing."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        pytest.skip(
            "redis-server not found on PATH: install the 'redis-server' package (apt-get "
            "install redis-server; .ci/run does) to run the Celery adapter's tests"
        )
    for attempt in range(3):  # the free port may be taken between the probe and the bind
        server = RedisServer(binary)
        try:
            return server.start()
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """One throwaway Redis server per test process (xdist worker)."""
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(name="redis_url")
def redis_url_fixture(redis_server: RedisServer) -> Iterator[str]:
    """The base URL (no database number) of the session server, emptied for this test."""
    redis_server.flush()
    yield f"redis://127.0.0.1:{redis_server.port}"
    with contextlib.suppress(OSError):
        redis_server.flush()
