"""Deferred snapshots: bulk claims commit the snapshot in SQLite, folders follow, none lost."""

from __future__ import annotations

import sqlite3
import stat
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from fluxmail.audit import open_store
from fluxmail.audit.sqlite import LATEST_VERSION, MIGRATIONS
from tests.support.audit import (
    EML,
    failed_result,
    folder_of,
    make_record,
    pending_snapshots,
    sent_result,
)
from tests.support.mailing import mailer_for


def _messages(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {
            "subject": f"n{i}",
            "recipients": [f"u{i}@example.com"],
            "body": f"body {i}",
            "attachments": [(f"a{i}.txt", f"attached {i}".encode())],
        }


def test_bulk_run_leaves_every_folder_complete_with_the_bytes_sent(
    smtp_server: Any, tmp_path: Path, no_writer: None
) -> None:
    """After send_many and mailer.close(), every message folder holds the exact bytes the
    server received (the background writer kept idle: close writes whatever it left)."""
    server = smtp_server()
    root = tmp_path / "audit"
    mailer = mailer_for(server, audit_dir=root)
    outcomes = list(mailer.send_many(_messages(150), concurrency=4, progress=False))
    mailer.close()
    # Looked at on disk before any read API (reading writes pending folders itself).
    assert pending_snapshots(root) == 0
    received = {m.rcpt_tos[0]: m.data for m in server.messages}
    assert len(outcomes) == 150 and len(received) == 150
    for outcome in outcomes:
        assert outcome.result is not None and outcome.result.audit_id is not None
        folder = folder_of(root, outcome.result.audit_id)
        i = outcome.index
        assert (folder / "message.eml").read_bytes() == received[f"u{i}@example.com"]
        assert (folder / "body.txt").read_text("utf-8").strip() == f"body {i}"
        attached = folder / "attachments" / f"a{i}.txt"
        assert attached.read_bytes() == f"attached {i}".encode()
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(attached.stat().st_mode) == 0o600
    record = mailer.audit.get(outcomes[0].result.audit_id)  # type: ignore[union-attr]
    assert record.status == "sent" and record.attachments[0]["size"] == len(b"attached 0")


def test_the_background_writer_writes_the_folders(tmp_path: Path) -> None:
    """Without any read or close, the store's writer thread empties pending_snapshots."""
    root = tmp_path / "audit"
    store = open_store(directory=root, explicit=True)
    claims = store.claim_many([make_record() for _ in range(100)], defer_snapshots=True)
    for _ in range(3000):  # bounded wait for the thread; no timing is asserted
        if pending_snapshots(root) == 0:
            break
        time.sleep(0.01)
    assert pending_snapshots(root) == 0
    for claim in claims:
        assert (folder_of(root, claim.audit_id) / "message.eml").read_bytes() == EML
    store.close()


def test_a_pending_snapshot_is_readable_and_written_at_the_next_open(
    tmp_path: Path, no_writer: None
) -> None:
    """Claimed with defer_snapshots and never written: get_eml reads the database, and the next
    open of the store writes the folder (a killed bulk run loses no snapshot)."""
    root = tmp_path / "audit"
    store = open_store(directory=root, explicit=True)
    [claim] = store.claim_many([make_record("k-1")], defer_snapshots=True)
    assert not (root / "messages").exists() and pending_snapshots(root) == 1
    assert store.get_eml(claim.audit_id) == EML
    assert store.get(claim.audit_id).status == "sending"  # committed before any send
    reopened = open_store(directory=root, explicit=True)  # the original is never drained
    folder = folder_of(root, claim.audit_id)
    assert (folder / "message.eml").read_bytes() == EML
    assert (folder / "body.txt").read_text() == "Hello Bob"
    assert (folder / "body.html").read_text() == "<p>Hello Bob</p>"
    assert (folder / "attachments" / "report.pdf").read_bytes() == b"%PDF-1.4 fake"
    assert pending_snapshots(root) == 0 and reopened.get_eml(claim.audit_id) == EML
    reopened.close()


def test_get_writes_the_folder_it_returns(tmp_path: Path, no_writer: None) -> None:
    """get() of a pending record writes its folder first, so record.folder always exists."""
    store = open_store(directory=tmp_path / "audit", explicit=True)
    [claim] = store.claim_many([make_record()], defer_snapshots=True)
    record = store.get(claim.audit_id)
    assert record.folder is not None and (record.folder / "message.eml").read_bytes() == EML
    assert [r.id for r in store.list()] == [claim.audit_id]
    store.close()


def test_list_writes_the_folders_of_many_pending_records(tmp_path: Path, no_writer: None) -> None:
    """list() over more pending records than one SQL IN clause takes returns existing folders."""
    store = open_store(directory=tmp_path / "audit", explicit=True)
    store.claim_many([make_record(attachments=()) for _ in range(600)], defer_snapshots=True)
    records = store.list(limit=1000)
    assert len(records) == 600 and pending_snapshots(tmp_path / "audit") == 0
    assert all(r.folder is not None and (r.folder / "message.eml").exists() for r in records)
    store.close()


def test_a_retry_replaces_the_pending_snapshot(tmp_path: Path, no_writer: None) -> None:
    """A failed keyed record claimed again (deferred) keeps the new bytes, not the old ones."""
    root = tmp_path / "audit"
    store = open_store(directory=root, explicit=True)
    [first] = store.claim_many([make_record("again")], defer_snapshots=True)
    store.finish(first.audit_id, failed_result())
    [second] = store.claim_many([make_record("again", eml=b"new bytes")], defer_snapshots=True)
    assert second.audit_id == first.audit_id and pending_snapshots(root) == 1
    assert store.get_eml(first.audit_id) == b"new bytes"
    assert store.materialize_pending() == 1
    assert (folder_of(root, first.audit_id) / "message.eml").read_bytes() == b"new bytes"
    store.close()


def test_close_writes_pending_snapshots_and_prune_drops_them(
    tmp_path: Path, no_writer: None
) -> None:
    """close() writes what is pending; prune() removes pending snapshots with their records."""
    root = tmp_path / "audit"
    store = open_store(directory=root, explicit=True)
    [kept] = store.claim_many([make_record()], defer_snapshots=True)
    store.close()
    assert pending_snapshots(root) == 0
    assert (folder_of(root, kept.audit_id) / "message.eml").exists()
    store = open_store(directory=root, explicit=True)
    [gone] = store.claim_many([make_record()], defer_snapshots=True)
    store.finish_many([(kept.audit_id, sent_result()), (gone.audit_id, sent_result())])
    assert store.prune(older_than=timedelta(seconds=-5)) == 2
    assert pending_snapshots(root) == 0 and not list((root / "messages").rglob("message.eml"))
    store.close()


def test_a_version_2_database_is_migrated_to_deferred_snapshots(
    tmp_path: Path, no_writer: None
) -> None:
    """A schema-2 database gains pending_snapshots (version 3), keeps its records, and works."""
    folder = tmp_path / "audit"
    folder.mkdir()
    conn = sqlite3.connect(folder / "store.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for version, steps in MIGRATIONS[:2]:
        for sql in steps:
            conn.execute(sql)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    conn.execute(
        "INSERT INTO messages (id, created_at, updated_at, status, backend, sender, to_addrs, "
        "cc_addrs, bcc_addrs, subject, message_id, content_hash, folder, attachments) VALUES "
        "('01V2', 1.0, 1.0, 'sent', 'smtp', 'a@example.com', '[\"b@example.com\"]', '[]', "
        "'[]', 'v2', '<v2@example.com>', 'h', 'messages/1970-01-01/01V2', '[]')"
    )
    conn.commit()
    conn.close()
    store = open_store(directory=folder, explicit=True)
    assert store.get("01V2").subject == "v2"
    [claim] = store.claim_many([make_record()], defer_snapshots=True)
    assert store.get_eml(claim.audit_id) == EML
    store.close()
    conn = sqlite3.connect(folder / "store.db")
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    conn.close()
    # Later migrations (4: bulk-run tokens) apply on top of 3.
    assert versions[:3] == [1, 2, 3] and versions == list(range(1, LATEST_VERSION + 1))


def test_the_writer_waits_for_a_bulk_run_then_catches_up(smtp_server: Any, tmp_path: Path) -> None:
    """The snapshot writer stays idle during send_many; afterwards the folders appear by itself."""
    server = smtp_server()
    root = tmp_path / "audit"
    mailer = mailer_for(server, audit_dir=root)
    assert mailer.send_many(_messages(40), concurrency=2, progress=False).wait().sent == 40
    for _ in range(3000):  # bounded wait for the thread; no timing is asserted
        if pending_snapshots(root) == 0:
            break
        time.sleep(0.01)
    assert pending_snapshots(root) == 0 and server.deliveries == 40
