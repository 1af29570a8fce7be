"""Snapshot spools: a bulk run's new snapshots go to one file per run, and every folder follows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fluxmail.audit import open_store
from fluxmail.audit.spool import frame, read_frames
from tests.support.audit import (
    EML,
    failed_result,
    folder_of,
    make_record,
    pending_snapshots,
    sent_result,
)


def _spools(root: Path) -> list[Path]:
    return sorted((root / "runs").glob("*.snap*")) if (root / "runs").exists() else []


def test_a_run_spools_its_snapshots_and_writes_every_folder_when_it_ends(
    tmp_path: Path, no_writer: None
) -> None:
    """A bulk run's new claims put their snapshots in its spool (no pending rows); the bytes
    are readable meanwhile, also from another opener, and the folders follow the run's end."""
    root = tmp_path / "audit"
    store = open_store(directory=root, explicit=True)
    lease = store.begin_run()
    records = [make_record(eml=EML + str(i).encode()) for i in range(5)]
    claims = store.claim_many(records, defer_snapshots=True, run=lease.token)
    assert pending_snapshots(root) == 0 and len(_spools(root)) == 1
    assert not (root / "messages").exists()
    other = open_store(directory=root, explicit=True)  # the spool is locked: left alone
    assert other.get_eml(claims[3].audit_id) == EML + b"3"
    assert not (root / "messages").exists() and len(_spools(root)) == 1
    other.close()
    lease.close(resolved=True)
    store.finish_many([(c.audit_id, sent_result()) for c in claims])
    store.close()
    assert _spools(root) == []
    for i, claim in enumerate(claims):
        folder = folder_of(root, claim.audit_id)
        assert (folder / "message.eml").read_bytes() == EML + str(i).encode()
        assert (folder / "body.txt").read_text() == "Hello Bob"
        assert (folder / "body.html").read_text() == "<p>Hello Bob</p>"
        assert (folder / "attachments" / "report.pdf").read_bytes() == b"%PDF-1.4 fake"


def test_a_read_during_the_run_writes_the_folders_it_returns(
    tmp_path: Path, no_writer: None
) -> None:
    """get() in the process that is sending writes the spooled folder first."""
    root = tmp_path / "audit"
    store = open_store(directory=root, explicit=True)
    lease = store.begin_run()
    [claim] = store.claim_many([make_record()], defer_snapshots=True, run=lease.token)
    record = store.get(claim.audit_id)
    assert record.folder is not None and (record.folder / "message.eml").read_bytes() == EML
    [later] = store.claim_many([make_record(eml=b"later")], defer_snapshots=True, run=lease.token)
    assert store.get_eml(later.audit_id) == b"later"
    lease.close(resolved=False)
    store.close()
    assert _spools(root) == []


_KILLED_RUN = """
import os, sys
from pathlib import Path
from fluxmail.audit import open_store
from tests.support.audit import EML, folder_of, pending_snapshots, make_record
store = open_store(directory=Path(sys.argv[1]), explicit=True)
lease = store.begin_run()
claims = store.claim_many([make_record() for _ in range(3)], defer_snapshots=True, run=lease.token)
print(" ".join(c.audit_id for c in claims), flush=True)
os._exit(9)  # killed: no close, no background writer had its turn (held by the run)
"""


def test_the_spool_of_a_killed_run_is_written_by_the_next_opener(tmp_path: Path) -> None:
    """A process that dies mid-run leaves its spool; whoever opens the store next writes the
    folders of its records and removes it, and resolves the records as never sent."""
    root = tmp_path / "audit"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(root)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 9, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 3 and len(_spools(root)) == 1 and not (root / "messages").exists()
    store = open_store(directory=root, explicit=True)
    assert _spools(root) == []
    for audit_id in ids:
        assert (folder_of(root, audit_id) / "message.eml").read_bytes() == EML
        assert store.get(audit_id).status == "failed"  # never marked: never handed to the wire
    store.close()


def test_frames_of_records_that_are_not_the_run_s_are_never_written(
    tmp_path: Path, no_writer: None
) -> None:
    """A frame whose claim rolled back (no record), or whose record a later run claimed
    again, is skipped: the later attempt's bytes are the ones kept."""
    root = tmp_path / "audit"
    store = open_store(directory=root, explicit=True)
    first = store.begin_run()
    [claim] = store.claim_many([make_record("again")], defer_snapshots=True, run=first.token)
    store.finish(claim.audit_id, failed_result())
    spool = store._snapshots.spool(store._root, first.token)
    spool.append([frame("no-such-record", "messages/2000-01-01/no-such-record", make_record())])
    second = store.begin_run()
    again = store.claim_many(
        [make_record("again", eml=b"new bytes")], defer_snapshots=True, run=second.token
    )
    assert again[0].audit_id == claim.audit_id and pending_snapshots(root) == 1  # a retry: a row
    assert store.materialize_pending() == 1  # the retry's folder, while the first run lives
    second.close(resolved=True)
    first.close(resolved=True)  # its spool is written now: its frame is no longer its run's
    store.close()
    assert (folder_of(root, claim.audit_id) / "message.eml").read_bytes() == b"new bytes"
    assert not (root / "messages" / "2000-01-01").exists()
    assert _spools(root) == []


def test_a_frame_cut_short_ends_the_readable_frames() -> None:
    """A spool whose last write was cut by a crash yields only its complete frames."""
    magic = b"fluxmail-spool 1\n"
    one = frame("id1", "messages/x/id1", make_record(text=None))
    two = frame("id2", "messages/x/id2", make_record(html=None, attachments=()))
    found = [f for f, _ in read_frames(magic + one + two[:-3])]
    assert [f.audit_id for f in found] == ["id1"]
    assert found[0].text is None and found[0].html == "<p>Hello Bob</p>"
    assert found[0].files == b"%PDF-1.4 fake" and found[0].eml == EML
    whole = [f for f, _ in read_frames(magic + one + two)]
    assert whole[1].html is None and whole[1].files == b"" and whole[1].text == "Hello Bob"
    assert list(read_frames(b"not a spool" + one)) == []


def test_the_background_writer_writes_a_finished_run_s_folders(tmp_path: Path) -> None:
    """Without a read or close, the writer thread writes an ended run's spool and removes it."""
    root = tmp_path / "audit"
    store = open_store(directory=root, explicit=True)
    lease = store.begin_run()
    with store.hold_snapshots():
        claims = store.claim_many([make_record() for _ in range(20)], defer_snapshots=True,
                                  run=lease.token)  # fmt: skip
        lease.close(resolved=True)
    for _ in range(3000):  # bounded wait for the thread; no timing is asserted
        if not _spools(root):
            break
        time.sleep(0.01)
    assert _spools(root) == []
    assert all((folder_of(root, c.audit_id) / "message.eml").exists() for c in claims)
    store.close()


_FULL_DISK = r"""
import os, resource, signal, sys
from fluxmail.audit.spool import Spool
from fluxmail.errors import AuditError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (4, 4))
try:
    Spool.create(sys.argv[1], "01RUN")
except AuditError as exc:
    print(exc.code)
"""


def test_a_spool_that_cannot_be_started_leaves_nothing(tmp_path: Path) -> None:
    """The kernel refuses the spool's first write (a file size limit, as a full disk would):
    audit_unwritable, and neither the file nor its lock is left behind."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.stdout.split() == ["audit_unwritable"], done.stderr
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_spool_whose_name_is_taken_leaves_no_half_created_file(tmp_path: Path) -> None:
    """The rename onto the spool's name fails (a folder has that name): audit_unwritable, and
    the file being created is removed, not left locked under its temporary name."""
    from fluxmail.audit.spool import Spool
    from fluxmail.errors import AuditError

    (tmp_path / "runs" / "01RUN.snap").mkdir(parents=True)
    try:
        Spool.create(str(tmp_path), "01RUN")
    except AuditError as exc:
        assert exc.code == "audit_unwritable"
    else:
        raise AssertionError("a spool was created over a folder")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["01RUN.snap"]
