"""The SQLite store's own promises: the folder layout, permissions, migrations, fallbacks."""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fluxmail.audit import open_store
from fluxmail.audit.sqlite import LATEST_VERSION, MIGRATIONS
from fluxmail.errors import AuditError
from tests.support.audit import EML, make_record, run_claimers, sent_result


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_snapshot_folder_holds_exactly_what_was_given(tmp_path: Path) -> None:
    """One folder per message: message.eml (exact bytes), bodies, attachments; nothing else."""
    store = open_store(directory=tmp_path / "audit", explicit=True)
    record = store.get(store.claim(make_record()).audit_id)
    assert record.folder is not None
    day = record.created_at.strftime("%Y-%m-%d")
    assert record.folder == tmp_path / "audit" / "messages" / day / record.id
    assert _files(record.folder) == {
        "message.eml": EML,
        "body.txt": b"Hello Bob",
        "body.html": b"<p>Hello Bob</p>",
        "attachments/report.pdf": b"%PDF-1.4 fake",
    }
    assert record.attachments[0]["sha256"] == hashlib.sha256(b"%PDF-1.4 fake").hexdigest()
    store.close()


def test_bcc_never_reaches_the_files(tmp_path: Path) -> None:
    """Bcc addresses are stored only in the database, never in a snapshot file."""
    store = open_store(directory=tmp_path / "audit", explicit=True)
    store.finish(store.claim(make_record()).audit_id, sent_result())
    store.close()
    for name, data in _files(tmp_path / "audit" / "messages").items():
        assert b"hidden@example.com" not in data, name


def test_a_failed_batch_leaves_no_folders(tmp_path: Path) -> None:
    """claim_many that fails removes the snapshot folders it had written."""
    store = open_store(directory=tmp_path / "audit", explicit=True)
    store.claim(make_record("c-1"))
    with pytest.raises(AuditError):
        store.claim_many([make_record("c-2"), make_record("c-1", content_hash="other")])
    assert len(list((tmp_path / "audit" / "messages").glob("*/*"))) == 1
    store.close()


def test_absent_bodies_are_absent_files_and_names_are_made_safe(tmp_path: Path) -> None:
    """Only present bodies get a file; hostile or clashing attachment names stay inside."""
    store = open_store(directory=tmp_path / "audit", explicit=True)
    attachments = (
        ("../../etc/passwd", "text/plain", b"a"),
        ("passwd", "text/plain", b"b"),
        ("..", "text/plain", b"c"),
        ("r\u00e9sum\u00e9 (1).pdf", "application/pdf", b"d"),
    )
    rec = make_record(text=None, html=None, attachments=attachments)
    record = store.get(store.claim(rec).audit_id)
    assert record.folder is not None
    assert sorted(_files(record.folder)) == [
        "attachments/attachment",
        "attachments/passwd",
        "attachments/passwd-2",
        "attachments/r_sum_1_.pdf",
        "message.eml",
    ]
    assert [a["filename"] for a in record.attachments] == [a[0] for a in attachments]
    store.close()


def test_folders_are_private(tmp_path: Path) -> None:
    """The audit folder and message folders are 0o700, every file 0o600."""
    store = open_store(directory=tmp_path / "audit", explicit=True)
    store.claim(make_record())
    for path in [tmp_path / "audit", *(tmp_path / "audit").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    store.close()


def test_database_runs_in_wal_mode(tmp_path: Path) -> None:
    """store.db uses WAL, so readers never block the writer."""
    open_store(directory=tmp_path / "audit", explicit=True).close()
    with closing(sqlite3.connect(tmp_path / "audit" / "store.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_new_store_uses_4_kib_pages_and_an_older_store_keeps_its_own(tmp_path: Path) -> None:
    """Bulk commits rewrite each B-tree's last page: a new store's pages are 4 KiB, the kernel's.
    A store made with 16 KiB pages (earlier versions) opens, keeps them and still records."""
    open_store(directory=tmp_path / "new", explicit=True).close()
    (tmp_path / "old").mkdir(mode=0o700)
    with closing(sqlite3.connect(tmp_path / "old" / "store.db")) as conn:
        conn.execute("PRAGMA page_size=16384")
        conn.execute("VACUUM")  # an empty file takes the page size when first written
    old = open_store(directory=tmp_path / "old", explicit=True)
    old.finish(old.claim(make_record()).audit_id, sent_result())
    old.close()
    for name, size in (("new", 4096), ("old", 16384)):
        with closing(sqlite3.connect(tmp_path / name / "store.db")) as conn:
            assert conn.execute("PRAGMA page_size").fetchone()[0] == size, name
    with closing(sqlite3.connect(tmp_path / "old" / "store.db")) as conn:
        assert conn.execute("SELECT status FROM messages").fetchall() == [("sent",)]


def test_prune_removes_the_message_folders(tmp_path: Path) -> None:
    """prune() deletes the snapshot folders of the pruned records."""
    store = open_store(directory=tmp_path / "audit", explicit=True)
    audit_id = store.claim(make_record()).audit_id
    store.finish(audit_id, sent_result())
    assert store.prune(older_than=timedelta(seconds=-5)) == 1
    assert list((tmp_path / "audit" / "messages").rglob("*")) == []
    store.close()


def test_an_older_schema_is_migrated_forward(tmp_path: Path) -> None:
    """A version-1 database (no attachment manifest) is upgraded in place and keeps its records."""
    folder = tmp_path / "audit"
    folder.mkdir()
    conn = sqlite3.connect(folder / "store.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for sql in MIGRATIONS[0][1]:
        conn.execute(sql)
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.execute(
        "INSERT INTO messages (id, created_at, updated_at, status, backend, sender, to_addrs, "
        "cc_addrs, bcc_addrs, subject, message_id, content_hash, folder) VALUES "
        "('01OLD', 1.0, 1.0, 'sent', 'smtp', 'a@example.com', '[\"b@example.com\"]', '[]', "
        "'[]', 'old', '<old@example.com>', 'h', 'messages/1970-01-01/01OLD')"
    )
    conn.commit()
    conn.close()
    store = open_store(directory=folder, explicit=True)
    old = store.get("01OLD")
    assert (old.subject, old.to, old.attachments) == ("old", ("b@example.com",), ())
    store.claim(make_record())
    store.close()
    conn = sqlite3.connect(folder / "store.db")
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    conn.close()
    assert versions == list(range(1, LATEST_VERSION + 1))


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer fluxmail is not touched: audit_incompatible."""
    open_store(directory=tmp_path / "audit", explicit=True).close()
    conn = sqlite3.connect(tmp_path / "audit" / "store.db")
    conn.execute("INSERT INTO schema_version VALUES (?, 0)", (LATEST_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(AuditError) as info:
        open_store(directory=tmp_path / "audit", explicit=True)
    assert info.value.code == "audit_incompatible"


@pytest.mark.slow
def test_processes_opening_a_new_folder_at_once(tmp_path: Path) -> None:
    """Four processes creating the same new folder (and schema) at once all work, one claim each."""
    spec = {"directory": tmp_path / "fresh", "explicit": True}
    claims = run_claimers(spec, ["k-1", "k-2"], processes=4)
    assert sorted(key for key, _, fresh in claims if fresh) == ["k-1", "k-2"]


def test_explicit_unwritable_folder_is_an_error(tmp_path: Path) -> None:
    """An explicit folder that cannot be created (under a regular file) raises audit_unwritable."""
    (tmp_path / "afile").write_text("not a directory")
    target = tmp_path / "afile" / "audit"
    with pytest.raises(AuditError) as info:
        open_store(directory=target, explicit=True)
    assert info.value.code == "audit_unwritable"
    assert str(target) in str(info.value)


def test_default_folder_falls_back_to_temp_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unwritable default .fluxmail/ falls back to the temp dir, warns once, and works."""
    Path(".fluxmail").write_text("a file where the folder should be")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with caplog.at_level(logging.WARNING, logger="fluxmail"):
        first = open_store()
        second = open_store()
    expected = tmp_path / "tmp" / f"fluxmail-audit-{os.getuid()}"
    assert first.location == second.location == str(expected)
    warnings = [r for r in caplog.records if r.name == "fluxmail"]
    assert len(warnings) == 1
    assert str(expected) in warnings[0].getMessage()
    audit_id = first.claim(make_record()).audit_id
    assert second.get(audit_id).status == "sending"
    first.close()
    second.close()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_fallback_folder_owned_by_someone_else_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temp fallback folder planted by another user is not used (audit_unwritable)."""
    Path(".fluxmail").write_text("blocker")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"fluxmail-audit-{os.getuid()}"
    planted.mkdir(mode=0o777)
    os.chown(planted, 65534, 65534)
    with pytest.raises(AuditError) as info:
        open_store()
    assert info.value.code == "audit_unwritable"


def test_default_folder_is_dot_fluxmail_in_the_working_directory() -> None:
    """Without a directory the store lives in ./.fluxmail/."""
    store = open_store()
    assert store.location == str(Path.cwd() / ".fluxmail")
    assert (Path.cwd() / ".fluxmail" / "store.db").is_file()
    store.close()


def test_importing_the_audit_package_does_not_load_sqlite3() -> None:
    """fluxmail.audit stays light: sqlite3 loads only when a store is opened."""
    code = "import sys, fluxmail.audit; print('sqlite3' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.strip() == "False"


def test_a_store_dropped_without_close_closes_its_connection(tmp_path: Path) -> None:
    """A mailer dropped without close() leaks no SQLite connection (Python 3.13 warns about
    one collected open); nor does a store that refuses the database it finds."""
    store = open_store(directory=tmp_path / "audit", explicit=True)
    conn = store._connection()
    store._snapshots.stop()  # its thread would keep the store alive until it ends
    del store
    gc.collect()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")

    opened: list[sqlite3.Connection] = []
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(real(*args, **kwargs))
        return opened[-1]

    newer = sqlite3.connect(tmp_path / "audit" / "store.db")
    newer.execute("INSERT INTO schema_version VALUES (?, 0)", (LATEST_VERSION + 1,))
    newer.commit()
    newer.close()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite3, "connect", connect)
        with pytest.raises(AuditError) as info:
            open_store(directory=tmp_path / "audit", explicit=True)
    assert info.value.code == "audit_incompatible"
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].execute("SELECT 1")
