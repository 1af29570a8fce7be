"""The ``provider_message_id`` column (SQLite schema 6, PostgreSQL schema 4): the id an HTTP API
gave a message, written by finish() and read back; a schema-5 / schema-3 store migrates."""

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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"directory": tmp_path / "audit", "explicit": True}
    return {"url": request.getfixturevalue("pg_database")}


def test_finish_records_the_provider_message_id_and_reads_it_back(spec: dict[str, Any]) -> None:
    """Stored, shown by to_dict(), carried by result() and by a replay."""
    store = open_store(**spec)
    try:
        claim = store.claim(make_record("k1"))
        result = replace(sent_result(), status="queued", provider_message_id="re-49a3999c")
        store.finish(claim.audit_id, result)
        record = store.get(claim.audit_id)
        assert record.provider_message_id == "re-49a3999c"
        assert record.to_dict()["provider_message_id"] == "re-49a3999c"
        assert record.result().provider_message_id == "re-49a3999c"
        replay = store.claim(make_record("k1")).replay
        assert replay is not None and replay.provider_message_id == "re-49a3999c"
    finally:
        store.close()


def test_a_schema_5_sqlite_store_opens_and_migrates(tmp_path: Path) -> None:
    """A store from before the column: its records read with provider_message_id None."""
    folder = tmp_path / "audit"
    folder.mkdir()
    conn = sqlite3.connect(folder / "store.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for version, steps in MIGRATIONS[:5]:
        for sql in steps:
            conn.execute(sql)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    conn.execute(
        "INSERT INTO messages (id, created_at, updated_at, status, backend, sender, to_addrs, "
        "cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, folder, "
        "transport) VALUES ('01V5', 1.0, 1.0, 'sent', 'smtp', 'a@example.com', "
        "'[\"b@example.com\"]', '[]', '[]', 'v5', '<v5@example.com>', 'old', 'hash-1', "
        "'messages/1970-01-01/01V5', 'smtp://a.example:587')"
    )
    conn.commit()
    conn.close()
    store = open_store(directory=folder, explicit=True)
    try:
        old = store.get("01V5")
        assert old.provider_message_id is None and old.transport == "smtp://a.example:587"
        claim = store.claim(make_record("new"))
        store.finish(claim.audit_id, replace(sent_result(), provider_message_id="sg-1"))
        assert store.get(claim.audit_id).provider_message_id == "sg-1"
    finally:
        store.close()
    versions = sqlite_versions(folder)
    assert versions == list(range(1, LATEST_VERSION + 1)) and LATEST_VERSION >= 6


@pytest.mark.postgres
def test_a_schema_3_postgres_store_opens_and_migrates(pg_database: str) -> None:
    """A PostgreSQL store at schema 3 (transport column, no provider id) migrates to 4."""
    from fluxmail.audit import postgres

    postgres_at_version(
        pg_database,
        3,
        "INSERT INTO fluxmail_audit_messages (id, created_at, updated_at, status, backend, "
        "sender, to_addrs, cc_addrs, bcc_addrs, subject, message_id, idempotency_key, "
        "content_hash, eml, transport) VALUES ('01V3', now(), now(), 'sent', 'smtp', "
        "'a@example.com', '[\"b@example.com\"]', '[]', '[]', 'v3', '<v3@example.com>', "
        "'pg-old', 'hash-1', 'x', 'smtp://a.example:587')",
    )
    store = open_store(url=pg_database)
    try:
        assert store.get("01V3").provider_message_id is None
        claim = store.claim(make_record("pg-new"))
        store.finish(claim.audit_id, replace(sent_result(), provider_message_id="pm-1"))
        assert store.get(claim.audit_id).provider_message_id == "pm-1"
    finally:
        store.close()
    assert postgres_versions(pg_database) == list(range(1, postgres.LATEST_VERSION + 1))
    assert postgres.LATEST_VERSION >= 4
