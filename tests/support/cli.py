"""Helpers for the CLI tests: run ``fluxmail`` in-process or as the installed console script."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fluxmail.cli import run

FLUXMAIL = Path(sys.executable).parent / "fluxmail"


@dataclass(frozen=True)
class Ran:
    """Exit code and captured output of one command."""

    code: int
    out: str
    err: str

    @property
    def both(self) -> str:
        return self.out + self.err


def cli(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    stdin: str | None = None,
) -> Ran:
    """Run ``fluxmail ARGS`` in this process (``stdin`` feeds --password-stdin)."""
    capsys.readouterr()
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = run(list(args))
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


def smtp_env(monkeypatch: pytest.MonkeyPatch, port: int, **extra: str) -> None:
    """Point fluxmail at a plaintext server on 127.0.0.1 through FLUXMAIL_* variables only."""
    monkeypatch.setenv("FLUXMAIL_HOST", "127.0.0.1")
    monkeypatch.setenv("FLUXMAIL_PORT", str(port))
    monkeypatch.setenv("FLUXMAIL_TLS", "false")
    monkeypatch.setenv("FLUXMAIL_SENDER", "Demo <demo@example.com>")
    monkeypatch.setenv("FLUXMAIL_TIMEOUT", "10")
    for name, value in extra.items():
        monkeypatch.setenv(f"FLUXMAIL_{name.upper()}", value)


def clean_environ(**extra: str) -> dict[str, str]:
    """The current environment without FLUXMAIL_* (plus ``extra``), for subprocesses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXMAIL_")}
    env.update(extra)
    env["NO_COLOR"] = "1"
    return env


def run_script(
    *args: str, env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``fluxmail`` console script (bounded by a timeout)."""
    return subprocess.run(
        [str(FLUXMAIL), *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class DevServerProcess:
    """``fluxmail dev-server --port 0`` as a subprocess; ``port`` read from its first line."""

    def __init__(self, cwd: Path, *extra: str) -> None:
        self.log = cwd / "dev-server.log"
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [str(FLUXMAIL), "dev-server", "--port", "0", *extra],
            cwd=cwd,
            env=clean_environ(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        for _ in range(200):  # up to ~20 s on a slow machine
            for line in self.log.read_text().splitlines():
                if "listening on" in line:
                    return int(line.rsplit(":", 1)[1].split()[0])
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dev-server did not start: {self.log.read_text()}")

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()
        return self.output()
