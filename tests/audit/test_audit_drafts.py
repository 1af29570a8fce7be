"""The stores' draft side and the origin column: claim_draft, discard_draft, migrations."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fluxmail.audit import open_store
from fluxmail.audit.sqlite_schema import LATEST_VERSION, MIGRATIONS
from tests.support.audit import (
    make_record,
    postgres_at_version,
    postgres_versions,
    sent_result,
    sqlite_versions,
)

SPEC = {"v": 1, "subject": "Quarterly report"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"directory": tmp_path / "audit", "explicit": True}
    return {"url": request.getfixturevalue("pg_database")}


def test_claim_draft_once_then_replay(spec: dict[str, Any]) -> None:
    """draft -> sending with the exact bytes and attachments; then a replay of the record."""
    store = open_store(**spec)
    try:
        record = make_record(status="draft", origin="mcp")
        audit_id = store.save_draft(record, SPEC)
        assert store.get(audit_id).status == "draft" and store.get(audit_id).origin == "mcp"
        claim = store.claim_draft(audit_id)
        assert claim.replay is None and claim.eml == record.eml and dict(claim.spec) == SPEC
        assert claim.attachments == (b"%PDF-1.4 fake",)
        assert store.get(audit_id).status == "sending"
        again = store.claim_draft(audit_id)
        assert again.replay is not None and again.replay.replayed
        store.finish(audit_id, sent_result())
        done = store.claim_draft(audit_id).replay
        assert done is not None and done.status == "sent" and done.replayed
        assert store.get(audit_id).to_dict()["origin"] == "mcp"
    finally:
        store.close()


def test_discard_only_a_draft(spec: dict[str, Any]) -> None:
    store = open_store(**spec)
    try:
        audit_id = store.save_draft(make_record(status="draft"), SPEC)
        store.discard_draft(audit_id)
        assert store.list() == []
        inline = store.claim(make_record()).audit_id
        with pytest.raises(Exception) as info:
            store.discard_draft(inline)
        assert getattr(info.value, "code", None) == "not_a_draft"
    finally:
        store.close()


def test_a_schema_7_sqlite_store_migrates_and_keeps_its_records(tmp_path: Path) -> None:
    """A store from before the origin column: old records read with origin None."""
    folder = tmp_path / "audit"
    folder.mkdir()
    conn = sqlite3.connect(folder / "store.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for version, steps in MIGRATIONS[:7]:
        for sql in steps:
            conn.execute(sql)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    conn.execute(
        "INSERT INTO messages (id, created_at, updated_at, status, backend, sender, to_addrs, "
        "cc_addrs, bcc_addrs, subject, message_id, content_hash, folder) VALUES ('01V7', 1.0, "
        "1.0, 'sent', 'smtp', 'a@example.com', '[\"b@example.com\"]', '[]', '[]', 'v7', "
        "'<v7@example.com>', 'h', 'messages/1970-01-01/01V7')"
    )
    conn.commit()
    conn.close()
    store = open_store(directory=folder, explicit=True)
    try:
        old = store.get("01V7")
        assert (old.status, old.subject, old.origin) == ("sent", "v7", None)
        claim = store.claim(replace(make_record("new"), origin="cli"))
        assert store.get(claim.audit_id).origin == "cli"
    finally:
        store.close()
    assert sqlite_versions(folder) == list(range(1, LATEST_VERSION + 1)) and LATEST_VERSION >= 8


@pytest.mark.postgres
def test_a_schema_5_postgres_store_migrates_and_keeps_its_records(pg_database: str) -> None:
    from fluxmail.audit import postgres

    postgres_at_version(
        pg_database,
        5,
        "INSERT INTO fluxmail_audit_messages (id, created_at, updated_at, status, backend, "
        "sender, to_addrs, cc_addrs, bcc_addrs, subject, message_id, content_hash, eml) VALUES "
        "('01V5', now(), now(), 'sent', 'smtp', 'a@example.com', '[\"b@example.com\"]', '[]', "
        "'[]', 'v5', '<v5@example.com>', 'hash-1', 'x')",
    )
    store = open_store(url=pg_database)
    try:
        old = store.get("01V5")
        assert (old.status, old.subject, old.origin) == ("sent", "v5", None)
        audit_id = store.save_draft(make_record(status="draft", origin="mcp"), SPEC)
        assert store.get(audit_id).origin == "mcp"
    finally:
        store.close()
    assert postgres_versions(pg_database) == list(range(1, postgres.LATEST_VERSION + 1))
    assert postgres.LATEST_VERSION >= 6
