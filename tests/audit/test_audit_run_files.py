"""A bulk run's files (SQLite store): the wire journal's marks, stored through a memory map,
survive a kill whatever part of the file was mapped, written or allocated when the process
died; the spool's batches are written from their parts exactly, or refused whole."""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
from pathlib import Path

import pytest

from fluxmail.audit.mapped import CHUNK, complete_lines
from fluxmail.audit.runs import WireJournal, create_locked, dead_run
from fluxmail.errors import AuditError


def _ids(count: int, start: int = 0) -> list[str]:
    return [f"01J{n:022d}" for n in range(start, start + count)]


MARK = len(_ids(1)[0]) + 1  # an id and its newline


def _mark_then_die(root: str, token: str, count: int, limit: int | None) -> None:
    """Mark ``count`` ids one by one (under a file-size limit, if given), then die by SIGKILL."""
    if limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core-dumping signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    journal = WireJournal(root, token)
    for audit_id in _ids(count):
        journal.mark([audit_id])
    os.kill(os.getpid(), signal.SIGKILL)


def _killed_run(root: Path, count: int, limit: int | None = None) -> frozenset[str]:
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_mark_then_die, args=(str(root), "run1", count, limit))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    dead = dead_run(str(root), "run1")
    assert dead is not None
    dead.release(resolved=False)
    return dead.on_wire


def test_marks_in_the_mapped_journal_survive_a_kill(tmp_path: Path) -> None:
    count = CHUNK // MARK + 500  # past the first mapped chunk: the journal grew once
    assert _killed_run(tmp_path, count) == frozenset(_ids(count))


def test_a_journal_that_cannot_be_allocated_writes_each_mark(tmp_path: Path) -> None:
    """A file-size limit below one chunk: allocating fails (EFBIG), marks go by os.write."""
    count = 1000
    limit = count * MARK + 4096
    assert limit < CHUNK
    assert _killed_run(tmp_path, count, limit) == frozenset(_ids(count))


def test_a_journal_that_cannot_grow_keeps_the_mapped_marks_and_the_written_ones(
    tmp_path: Path,
) -> None:
    """The first chunk maps, the second cannot be allocated: the allocated tail is cut off
    before the next marks are written, so no zeros come between them."""
    count = CHUNK // MARK + 2000
    limit = CHUNK + 2000 * MARK
    assert _killed_run(tmp_path, count, limit) == frozenset(_ids(count))
    journal = tmp_path / "runs" / "run1.wire"
    assert b"\0" not in journal.read_bytes()


def test_a_resolved_run_removes_its_journal_and_an_unresolved_one_keeps_no_zeros(
    tmp_path: Path,
) -> None:
    done = WireJournal(str(tmp_path), "done")
    done.mark(_ids(3))
    done.close(resolved=True)
    assert not (tmp_path / "runs" / "done.wire").exists()
    kept = WireJournal(str(tmp_path), "kept")
    kept.mark(_ids(3))
    kept.close(resolved=False)
    assert (tmp_path / "runs" / "kept.wire").read_bytes() == "".join(
        f"{i}\n" for i in _ids(3)
    ).encode()


def test_a_closed_journal_refuses_a_mark(tmp_path: Path) -> None:
    journal = WireJournal(str(tmp_path), "run1")
    journal.close(resolved=True)
    with pytest.raises(Exception) as caught:
        journal.mark(_ids(1))
    assert getattr(caught.value, "code", None) == "audit_unwritable"


@pytest.mark.parametrize(
    ("contents", "marks"),
    [
        (b"a1\na2\n" + b"\0" * 64, [b"a1", b"a2"]),  # the mapped tail never written
        (b"a1\na2\na3" + b"\0" * 64, [b"a1", b"a2"]),  # the last mark cut short by a kill
        (b"a1\n\0\0\0\0a2\n\0\0", [b"a1"]),  # the last mark's first bytes never stored
        (b"a1\n\0\0\0\n", [b"a1"]),  # zeros a failed cut left, then the fallback's newline
        (b"", []),
    ],
)
def test_readers_take_only_whole_marks(contents: bytes, marks: list[bytes]) -> None:
    assert complete_lines(contents) == marks


def test_parts_are_written_as_their_join_past_the_iovec_limit(tmp_path: Path) -> None:
    file = create_locked(str(tmp_path), "run1", ".snap", ".snap-new", os.O_RDWR)
    parts = [f"part {n};".encode() for n in range(2500)] + [b"", b"x" * 100_000]
    file.write_parts(parts)
    assert file.read() == b"".join(parts)
    file.close(remove=True)


def _write_parts_past_the_limit(root: str, limit: int) -> str:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    file = create_locked(root, "run1", ".snap", ".snap-new", os.O_RDWR)
    try:
        file.write_parts([b"a" * 1000, b"b" * 1000, b"c" * 1000])
    except AuditError as exc:
        return exc.code
    finally:
        file.close(remove=False)
    return "written"


def test_a_short_write_goes_on_from_where_it_stopped_and_a_full_file_is_refused(
    tmp_path: Path,
) -> None:
    """writev stops at the file-size limit (a short write); the rest cannot be written."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        code = pool.apply(_write_parts_past_the_limit, (str(tmp_path), 1500))
    assert code == "audit_unwritable"
    assert (tmp_path / "runs" / "run1.snap").read_bytes() == b"a" * 1000 + b"b" * 500
