"""The ``transport`` column (SQLite schema 5, PostgreSQL schema 3): which transport took a
message, written by finish() and read back; an older store opens and migrates."""

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


def test_finish_records_the_transport_and_reads_it_back(spec: dict[str, Any]) -> None:
    store = open_store(**spec)
    try:
        claim = store.claim(make_record("k1"))
        store.finish(claim.audit_id, replace(sent_result(), transport="smtps://b.example:465"))
        record = store.get(claim.audit_id)
        assert record.transport == "smtps://b.example:465"
        assert record.to_dict()["transport"] == "smtps://b.example:465"
        assert record.result().transport == "smtps://b.example:465"
        replay = store.claim(make_record("k1")).replay  # a replay says where it went too
        assert replay is not None and replay.transport == "smtps://b.example:465"
    finally:
        store.close()


def test_a_schema_4_sqlite_store_opens_and_migrates(tmp_path: Path) -> None:
    """A store from before the transport column: its records read with transport None."""
    folder = tmp_path / "audit"
    folder.mkdir()
    conn = sqlite3.connect(folder / "store.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for version, steps in MIGRATIONS[:4]:
        for sql in steps:
            conn.execute(sql)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    conn.execute(
        "INSERT INTO messages (id, created_at, updated_at, status, backend, sender, to_addrs, "
        "cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, folder) "
        "VALUES ('01V4', 1.0, 1.0, 'sent', 'smtp', 'a@example.com', '[\"b@example.com\"]', "
        "'[]', '[]', 'v4', '<v4@example.com>', 'old', 'hash-1', 'messages/1970-01-01/01V4')"
    )
    conn.commit()
    conn.close()
    store = open_store(directory=folder, explicit=True)
    try:
        assert store.get("01V4").transport is None
        claim = store.claim(make_record("new"))
        store.finish(claim.audit_id, replace(sent_result(), transport="smtp://a.example:587"))
        assert store.get(claim.audit_id).transport == "smtp://a.example:587"
    finally:
        store.close()
    versions = sqlite_versions(folder)
    assert versions == list(range(1, LATEST_VERSION + 1)) and LATEST_VERSION >= 5


@pytest.mark.postgres
def test_a_schema_2_postgres_store_opens_and_migrates(pg_database: str) -> None:
    from fluxmail.audit import postgres

    postgres_at_version(
        pg_database,
        2,
        "INSERT INTO fluxmail_audit_messages (id, created_at, updated_at, status, backend, "
        "sender, to_addrs, cc_addrs, bcc_addrs, subject, message_id, idempotency_key, "
        "content_hash, eml) VALUES ('01V2', now(), now(), 'sent', 'smtp', "
        "'a@example.com', '[\"b@example.com\"]', '[]', '[]', 'v2', '<v2@example.com>', "
        "'pg-old', 'hash-1', 'x')",
    )
    store = open_store(url=pg_database)
    try:
        assert store.get("01V2").transport is None
        claim = store.claim(make_record("pg-new"))
        store.finish(claim.audit_id, replace(sent_result(), transport="smtp://a.example:587"))
        assert store.get(claim.audit_id).transport == "smtp://a.example:587"
    finally:
        store.close()
    assert postgres_versions(pg_database) == list(range(1, postgres.LATEST_VERSION + 1))
    assert postgres.LATEST_VERSION >= 3
