"""Shared benchmark helpers: the smtp-sink server, child runs, interleaving, medians, tables.

Standard library only: the worker imports this module under fluxmail 0.3.3's own virtualenv too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"  # git-ignored scratch space (audit folders, JSON results)
WORKER = BENCH_DIR / "_worker.py"
POSTFIX_DIRS = ("/usr/sbin", "/usr/libexec/postfix", "/usr/lib/postfix/sbin")
DEPS_HINT = "install Postfix's tools with `make bench-deps` (Debian package postfix)"

SENDER = "bench@example.com"
# A fixed ~1.9 KB plain-text body: with headers a message is about 2.2 KB (bench/README.md).
BODY = "".join(
    f"Line {n:02d}: the quick brown fox jumps over the lazy dog, again and again.\n"
    for n in range(27)
)


def recipient(i: int) -> str:
    """A distinct recipient per message, as in a real bulk send."""
    return f"user{i}@example.com"


def subject(i: int) -> str:
    return f"Benchmark message {i}"


def build_stdlib(i: int, attachment: bytes | None = None) -> EmailMessage:
    """The message every stdlib-based client builds per message (policy.default)."""
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = recipient(i)
    msg["Subject"] = subject(i)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="example.com")  # domain given: no getfqdn() lookup
    msg.set_content(BODY)
    if attachment is not None:
        msg.add_attachment(
            attachment, maintype="application", subtype="octet-stream", filename="data.bin"
        )
    return msg


def create_kwargs(i: int, attachment_path: str | None = None) -> dict[str, Any]:
    """One `create()` keyword dict, the form both fluxmail versions accept."""
    kwargs: dict[str, Any] = {"subject": subject(i), "recipients": [recipient(i)], "body": BODY}
    if attachment_path is not None:
        kwargs["attachments"] = [attachment_path]
    return kwargs


# --------------------------------------------------------------------------- tools and server


def find_tool(name: str) -> str | None:
    """Postfix installs its test tools in /usr/sbin, often not on a normal user's PATH."""
    found = shutil.which(name)
    if found:
        return found
    for folder in POSTFIX_DIRS:
        candidate = Path(folder) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_COUNTERS = re.compile(r"sess=(\d+) quit=(\d+) mesg=(\d+)")


class Sink:
    """Postfix smtp-sink on 127.0.0.1 (mail discarded); `-c` counters checked after each run."""

    def __init__(self, dump: Path | None = None) -> None:
        binary = find_tool("smtp-sink")
        if binary is None:
            raise RuntimeError(f"smtp-sink not found: {DEPS_HINT}")
        self.binary = binary
        self.port = 0
        # -D: every message appended to one file (to count duplicates by Message-ID; slower).
        self.dump = dump
        self._proc: subprocess.Popen[bytes] | None = None
        self._out = tempfile.NamedTemporaryFile(prefix="smtp-sink-", suffix=".out")  # noqa: SIM115

    def __enter__(self) -> Sink:
        for _ in range(5):  # a free port can be taken between probe and bind: retry
            self.port = free_port()
            argv = [self.binary, "-c"]
            if os.geteuid() == 0:
                argv += ["-u", "nobody"]  # required when run as root
            if self.dump is not None:
                self.dump.parent.chmod(0o777)  # written as nobody when run as root
                argv += ["-D", str(self.dump)]
            argv += [f"127.0.0.1:{self.port}", "256"]
            self._proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT)
            if self._wait_listening():
                return self
            self._stop()
        raise RuntimeError(f"smtp-sink did not start: {self._tail()}")

    def __exit__(self, *exc: object) -> None:
        self._stop()
        self._out.close()

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe,
            ):
                probe.recv(100)  # the 220 greeting; the probe session counts in sess= only
                return True
            time.sleep(0.02)
        return False

    def _stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(5)
        self._proc = None

    def _tail(self) -> str:
        return Path(self._out.name).read_text(errors="replace")[-300:]

    def messages(self) -> int:
        """Messages accepted so far (smtp-sink's `mesg=` counter)."""
        found = _COUNTERS.findall(Path(self._out.name).read_text(errors="replace"))
        return int(found[-1][2]) if found else 0

    def wait_messages(self, expected: int, timeout: float = 5.0) -> int:
        """The counter is written when a session ends: give the last QUITs a moment."""
        deadline = time.monotonic() + timeout
        count = self.messages()
        while count < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            count = self.messages()
        return count


# --------------------------------------------------------------------------- child processes


@dataclass
class ChildResult:
    """The JSON line a worker printed, or why there is none."""

    data: dict[str, Any]
    error: str | None = None  # crashed or printed nothing usable
    unavailable: str | None = None  # the client cannot run yet (e.g. send_many not written)

    @property
    def ok(self) -> bool:
        return self.error is None and self.unavailable is None


def run_child(
    argv: Sequence[str], timeout: float = 900, env: dict[str, str] | None = None
) -> ChildResult:
    """Run one measured client in a fresh interpreter: no shared heap, GC or import state."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return ChildResult({}, error=f"timed out after {timeout:.0f} s")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            data = json.loads(line)
            return ChildResult(data, unavailable=data.get("unavailable"), error=data.get("error"))
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return ChildResult({}, error=f"exit {proc.returncode}: {tail}")


def worker_argv(python: str, client: str, *args: object) -> list[str]:
    return [python, str(WORKER), client, *(str(a) for a in args)]


def clean_env(isolated: bool = False, **extra: str) -> dict[str, str]:
    """The caller's environment without FLUXMAIL_* (a developer's settings must not leak in).

    isolated: also without PYTHONPATH/PYTHONHOME, for another virtualenv's interpreter.
    """
    dropped = ("PYTHONPATH", "PYTHONHOME") if isolated else ()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FLUXMAIL_") and k not in dropped
    }
    env.update(extra)
    return env


def run_with_sink(run: Callable[[int], ChildResult], expected: int) -> tuple[ChildResult, int]:
    """Run a client against a fresh smtp-sink; also return how many messages the sink counted."""
    with Sink() as sink:
        result = run(sink.port)
        arrived = sink.wait_messages(expected) if result.ok else 0
    return result, arrived


def child_note(result: ChildResult) -> str:
    """Why a client produced no figures, for the table's note column."""
    if result.unavailable:
        return f"not available: {result.unavailable}"
    return f"error: {result.error}" if result.error else ""


# --------------------------------------------------------------------------- statistics, output


def rounds_order(names: Sequence[str], round_no: int) -> list[str]:
    """Rotate the order each round so no client always runs first (cache, CPU frequency)."""
    shift = round_no % len(names) if names else 0
    return list(names[shift:]) + list(names[:shift])


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"  # NaN -> "-"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain, aligned text table (first column left, the rest right)."""
    widths = [max(len(str(r[c])) for r in [headers, *rows]) for c in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(cells[0]).ljust(widths[0])]
        parts += [str(cell).rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


@dataclass(frozen=True)
class Check:
    """One target from the issues: ok is None when it could not be measured (SKIP)."""

    name: str
    detail: str
    ok: bool | None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]

    def __str__(self) -> str:
        return f"[{self.verdict}] {self.name}: {self.detail}"


def print_checks(title: str, checks: Sequence[Check]) -> None:
    print(f"\n{title}")
    for check in checks:
        print(f"  {check}")


def save_results(name: str, payload: dict[str, Any]) -> Path:
    """Keep the raw figures next to the run (bench/results/ is git-ignored)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"python": sys.version.split()[0], "cpus": os.cpu_count(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh folder on the machine's local disk (the system temp dir; FLUXMAIL_BENCH_DIR wins).

    Not under the checkout: some sandboxes watch the working tree, which makes every file
    creation there much dearer and would measure the watcher rather than fluxmail.
    """
    base = os.environ.get("FLUXMAIL_BENCH_DIR") or tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- fluxmail 0.3.3

VENV_033 = BENCH_DIR / ".venv-fluxmail033"  # git-ignored; never committed


def ensure_fluxmail033() -> tuple[str | None, str]:
    """The python of a private venv holding PyPI fluxmail==0.3.3 (created on first use).

    Returns (python, "") or (None, why it is unavailable).
    """
    python = VENV_033 / "bin" / "python"
    # -I: isolated, so the repository's own fluxmail in the cwd cannot shadow 0.3.3.
    probe = [str(python), "-I", "-c", "import fluxmail; print(fluxmail.__version__)"]
    if python.exists() and _output(probe) == "0.3.3":
        return str(python), ""
    print(f"(creating {VENV_033.relative_to(REPO_DIR)} with fluxmail==0.3.3 ...)", flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV_033)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "fluxmail==0.3.3"],
    ]  # fmt: skip
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return None, f"could not install fluxmail==0.3.3: {proc.stderr.strip()[-200:]}"
    version = _output(probe)
    return (str(python), "") if version == "0.3.3" else (None, f"venv has fluxmail {version}")


VENV_CORE = BENCH_DIR / ".venv-core"  # git-ignored: this checkout with its core dependencies only


def ensure_core_venv() -> tuple[str | None, str]:
    """The python of a private venv holding this checkout as ``pip install .`` installs it:
    the core dependencies only, as a Lambda deployment package has them (the development
    venv also holds the test and docs tools, whose entry points pydantic scans at start-up).

    Returns (python, "") or (None, why it is unavailable). The checkout is reinstalled on
    every call, so the venv always holds the code being measured.
    """
    python = VENV_CORE / "bin" / "python"
    steps = [] if python.exists() else [[sys.executable, "-m", "venv", str(VENV_CORE)]]
    steps.append([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  "--force-reinstall", "--no-deps", str(REPO_DIR)])  # fmt: skip
    steps.append([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  str(REPO_DIR)])  # fmt: skip
    print(f"(installing this checkout into {VENV_CORE.relative_to(REPO_DIR)} ...)", flush=True)
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return None, f"could not install the checkout: {proc.stderr.strip()[-200:]}"
    return str(python), ""


def _output(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""
