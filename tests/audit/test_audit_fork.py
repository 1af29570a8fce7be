"""A process forked during a bulk run does not keep the run's locks: once the run's own process
dies, the next opener recovers the run although the child still lives."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fluxmail.audit import open_store
from fluxmail.errors import AuditError
from tests.support.audit import EML, folder_of, make_record

_RUN_THEN_FORK = r"""
import os, sys, time
from pathlib import Path
from fluxmail.audit import open_store
from fluxmail.errors import AuditError
from tests.support.audit import make_record
store = open_store(directory=Path(sys.argv[1]), explicit=True)
lease = store.begin_run()
claims = store.claim_many([make_record() for _ in range(2)], defer_snapshots=True, run=lease.token)
lease.mark([claims[0].audit_id])  # the journal is now mapped
child = os.fork()
if child == 0:  # a worker forked by the application: outlives the run's process
%s
    time.sleep(60)
    os._exit(0)
os.write(1, f"{child} {claims[0].audit_id} {claims[1].audit_id}\n".encode())
os._exit(9)  # killed mid-run
"""

_FORKED_RUN = (
    _RUN_THEN_FORK
    % r"""
    try:
        lease.mark([claims[1].audit_id])  # the parent's journal is not the child's to write
        os.write(1, b"child wrote\n")  # one write per line: the two processes share the pipe
    except AuditError as exc:
        assert "forked child" in str(exc), exc
        os.write(1, exc.code.encode() + b"\n")
    lease.close(resolved=True)  # nothing: never removes the parent's files
"""
)

# Only inherits the run's journal and its map: never marks, never closes.
_IDLE_CHILD = (
    _RUN_THEN_FORK
    % r"""
    os.write(1, b"idle\n")
"""
)


def _run_and_kill(script: str, root: Path) -> tuple[int, list[str], list[str]]:
    """Run ``script`` (which forks once and exits 9, its child living on); the child's pid,
    the parent's line and the child's, whichever order they came in."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    with subprocess.Popen(
        [sys.executable, "-c", script, str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        first = proc.stdout.readline().split()  # the parent's line or the child's, in either order
        second = proc.stdout.readline().split()
        assert proc.wait(timeout=60) == 9
    pid_line, child_line = (first, second) if len(first) == 3 else (second, first)
    return int(pid_line[0]), pid_line[1:], child_line


@contextlib.contextmanager
def _killed_at_the_end(child: int) -> Iterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # reaped by init: wait until it is gone
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def _recovers_the_dead_run(root: Path, child: int, on_wire: str, never: str) -> None:
    os.kill(child, 0)  # still alive
    runs = sorted(p.name.rsplit(".", 1)[1] for p in (root / "runs").iterdir())
    assert runs == ["snap", "wire"]  # the child removed neither
    store = open_store(directory=root, explicit=True)
    try:
        assert store.get(on_wire).status == "unknown"  # marked by the run: maybe sent
        assert store.get(never).status == "failed"  # the child's mark never landed
        assert (folder_of(root, never) / "message.eml").read_bytes() == EML
        assert not (root / "runs").exists() or list((root / "runs").iterdir()) == []
    finally:
        store.close()


def test_a_forked_child_never_keeps_a_dead_run_alive(tmp_path: Path) -> None:
    root = tmp_path / "audit"
    child, (on_wire, never), child_line = _run_and_kill(_FORKED_RUN, root)
    with _killed_at_the_end(child):
        _recovers_the_dead_run(root, child, on_wire, never)
        assert child_line == ["audit_unwritable"]


def test_a_child_that_never_touches_the_run_holds_no_lock_through_the_journal_map(
    tmp_path: Path,
) -> None:
    """The journal is memory-mapped; a child that only inherits the map (it never marks nor
    closes anything) must not keep the run's lock through it."""
    root = tmp_path / "audit"
    child, (on_wire, never), child_line = _run_and_kill(_IDLE_CHILD, root)
    with _killed_at_the_end(child):
        assert child_line == ["idle"]
        _recovers_the_dead_run(root, child, on_wire, never)


def test_a_run_file_is_closed_once_only(tmp_path: Path) -> None:
    """Closing twice is harmless: the descriptor number is never closed again (it may belong
    to another file by then)."""
    store = open_store(directory=tmp_path / "audit", explicit=True)
    lease = store.begin_run()
    claims = store.claim_many([make_record()], run=lease.token)
    lease.mark([claims[0].audit_id])
    lease.close(resolved=False)
    spare = os.open(os.devnull, os.O_RDONLY)  # likely takes the journal's old number
    try:
        lease.close(resolved=False)
        os.fstat(spare)  # still open
        try:
            lease.mark([claims[0].audit_id])
        except AuditError as exc:
            assert exc.code == "audit_unwritable"
        else:
            raise AssertionError("a closed journal took a mark")
    finally:
        os.close(spare)
        store.close()
