"""A bulk run killed with SIGKILL: only what was handed to a connection may be written off.

The child runs ``send_many`` (50 messages with idempotency keys, concurrency 4) against a real
server; the server holds its replies once the chosen moment comes, the test kills the child,
then reruns the same keys in a new process and compares what the server received with the
records: every message exactly once, except those recorded ``unknown`` (at most once), and no
more ``unknown`` than the in-flight window (concurrency x 2: a message and the one primed
behind it).
"""

from __future__ import annotations

import asyncio
import collections
import email
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail.audit import open_store
from fluxmail.audit.records import NEVER_HANDED
from tests.support.audit import wait_for_sessions_to_end
from tests.support.servers import Faults, SMTPTestServer, stall

MESSAGES, CONCURRENCY = 50, 4
WINDOW = CONCURRENCY * 2
CHILD = """
import sys
from fluxmail import FluxMail
host, port, where = sys.argv[1], int(sys.argv[2]), sys.argv[3]
audit = {"audit_url": where} if "://" in where else {"audit_dir": where}
mailer = FluxMail(host=host, port=port, use_tls=False, sender="s@example.com", **audit)
items = (
    {"subject": f"n{i}", "recipients": [f"u{i}@x.org"], "body": "x", "idempotency_key": f"k{i}"}
    for i in range(int(sys.argv[4]))
)
outcomes = list(mailer.send_many(items, concurrency=int(sys.argv[5]), progress=False))
print(sum(1 for o in outcomes if o.result is not None and o.result.replayed))
mailer.close()
"""


class Gate:
    """Once ``after`` messages were received, every further final "." is recorded and then
    left without a reply (bounded) until ``release``: the moment to kill is frozen."""

    def __init__(self, server: SMTPTestServer, after: int) -> None:
        self.tripped = threading.Event()
        self._open = threading.Event()
        self._after = after
        self._server = server
        handler = server._handler
        original: Callable[..., Awaitable[str]] = handler.handle_DATA

        async def handle_data(*args: Any) -> str:
            text = await original(*args)
            if self._open.is_set() or len(server.received) <= self._after:
                return text
            self.tripped.set()
            deadline = time.monotonic() + 20
            while not self._open.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return text

        handler.handle_DATA = handle_data  # type: ignore[method-assign]

    def release(self) -> None:
        self._open.set()


def _child(server: SMTPTestServer, where: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, server.host, str(server.port), where,
         str(MESSAGES), str(CONCURRENCY)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _kill_when(child: subprocess.Popen[str], ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not ready() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.poll() is None, child.communicate()[1]
    assert ready(), "the child never reached the moment to kill it"
    time.sleep(0.4)  # outcomes already known get committed (FINISH_DELAY is 0.2 s)
    child.kill()
    child.communicate(timeout=10)


def _received_subjects(server: SMTPTestServer) -> collections.Counter[str]:
    return collections.Counter(
        str(email.message_from_bytes(m.data)["Subject"]) for m in server.received
    )


def _check_after_crash(where: str, most_unknown: int) -> None:
    """Opening the store resolves the dead run: no 'sending'; unsent ones failed, deferred."""
    store = open_store(url=where) if "://" in where else open_store(directory=Path(where))
    records = store.list(limit=1000, include_bcc=True)
    store.close()
    statuses = collections.Counter(r.status for r in records)
    assert set(statuses) <= {"sent", "unknown", "failed"}, statuses
    assert statuses["unknown"] <= most_unknown, statuses
    for record in records:
        if record.status == "failed":
            assert {r["status"] for r in record.recipients.values()} == {"deferred"}
            assert {r["text"] for r in record.recipients.values()} == {NEVER_HANDED}


def _rerun_and_check(server: SMTPTestServer, where: str) -> None:
    before = len(server.received)
    rerun = _child(server, where)
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    store = open_store(url=where) if "://" in where else open_store(directory=Path(where))
    records = store.list(limit=1000)
    store.close()
    assert len(records) == MESSAGES
    if "://" not in where:  # a run that ended leaves no lease behind
        assert not list((Path(where) / "runs").iterdir())
    got = _received_subjects(server)
    unknown = [r for r in records if r.status == "unknown"]
    assert len(unknown) <= WINDOW
    for record in records:
        if record.status == "unknown":
            assert got[record.subject] <= 1, record.subject
        else:
            assert record.status == "sent" and got[record.subject] == 1, (record.status, got)
    # The rerun sent exactly what it did not replay (replays: sent or unknown before it).
    assert len(server.received) - before == MESSAGES - int(out)


def _crash_and_rerun(smtp_server: Any, where: str, after: int | None, inspect: bool) -> None:
    """after=None: kill while every connection waits for the greeting (nothing sent yet)."""
    faults = Faults(greeting=stall(times=CONCURRENCY)) if after is None else None
    server = smtp_server(faults=faults)
    gate = Gate(server, after if after is not None else MESSAGES)
    child = _child(server, where)
    if after is None:
        _kill_when(child, lambda: server.connections >= CONCURRENCY)
        assert server.received == []
    else:
        _kill_when(child, gate.tripped.is_set)
    gate.release()
    if "://" in where:
        wait_for_sessions_to_end(where, "fluxmail-audit-run")
    if inspect:  # killed while connecting: nothing was handed to the wire, nothing unknown
        _check_after_crash(where, WINDOW if after is not None else 0)
    _rerun_and_check(server, where)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("after", "inspect"),
    [(None, True), (16, True), (45, False)],
    ids=["before-first-send", "mid-run", "last-batch"],
)
def test_sigkill_writes_off_only_the_in_flight_window(
    smtp_server: Any, tmp_path: Path, after: int | None, inspect: bool
) -> None:
    """SQLite: after a SIGKILL at any point, a rerun with the same keys sends every message
    that never reached the server exactly once; at most the in-flight window is 'unknown'."""
    _crash_and_rerun(smtp_server, str(tmp_path / "audit"), after, inspect)


@pytest.mark.slow
@pytest.mark.postgres
def test_sigkill_mid_run_postgres(smtp_server: Any, pg_database: str) -> None:
    """PostgreSQL: the same guarantee, the lease an advisory lock, the marks in the table."""
    _crash_and_rerun(smtp_server, pg_database, 16, True)
