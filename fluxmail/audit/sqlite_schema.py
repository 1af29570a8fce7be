"""The SQLite audit store's schema and connection settings, applied when a connection opens."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fluxmail.audit.deferred import PENDING_SCHEMA
from fluxmail.audit.problems import newer_schema

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "BUSY_TIMEOUT",
    "COLUMNS",
    "LATEST_VERSION",
    "MIGRATIONS",
    "SELECT",
    "configure",
    "dict_row",
    "migrate",
]

BUSY_TIMEOUT = 30.0  # seconds a writer waits for another process's transaction

# Forward migrations, applied in order inside one BEGIN IMMEDIATE transaction. Append, never edit.
MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (
        1,
        (
            """CREATE TABLE messages (
                id TEXT PRIMARY KEY,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                sent_at REAL,
                status TEXT NOT NULL,
                backend TEXT NOT NULL,
                provider TEXT,
                host TEXT,
                sender TEXT NOT NULL,
                to_addrs TEXT NOT NULL,
                cc_addrs TEXT NOT NULL,
                bcc_addrs TEXT NOT NULL,
                subject TEXT NOT NULL,
                message_id TEXT NOT NULL,
                idempotency_key TEXT,
                content_hash TEXT NOT NULL,
                recipients TEXT NOT NULL DEFAULT '{}',
                attempts TEXT NOT NULL DEFAULT '[]',
                base_attempts INTEGER NOT NULL DEFAULT 0,
                final_reply TEXT,
                duration REAL,
                metadata TEXT NOT NULL DEFAULT '{}',
                folder TEXT NOT NULL
            )""",
            "CREATE UNIQUE INDEX messages_key ON messages(idempotency_key) "
            "WHERE idempotency_key IS NOT NULL",
            "CREATE INDEX messages_status ON messages(status, updated_at)",
            "CREATE INDEX messages_created ON messages(created_at)",
        ),
    ),
    # 2: the attachment manifest (stored name, mimetype, size, sha256) next to the copies.
    (2, ("ALTER TABLE messages ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]'",)),
    # 3: snapshots of bulk claims, committed with the record, written to folders afterwards.
    (3, PENDING_SCHEMA),
    # 4: the bulk run (lease token) a record was claimed by; NULL for single sends.
    (4, ("ALTER TABLE messages ADD COLUMN run_id TEXT",)),
    # 5: the transport that took the message (a failover member's URL, no credentials).
    (5, ("ALTER TABLE messages ADD COLUMN transport TEXT",)),
    # 6: the id an HTTP API gave the message (SendGrid's X-Message-Id, Resend's id).
    (6, ("ALTER TABLE messages ADD COLUMN provider_message_id TEXT",)),
    # 7: the outbox (fluxmail.audit.outbox): the record is the queue row; pacing per endpoint.
    (
        7,
        (
            "ALTER TABLE messages ADD COLUMN due_at REAL",
            "ALTER TABLE messages ADD COLUMN deadline_at REAL",
            "ALTER TABLE messages ADD COLUMN lease_owner TEXT",
            "ALTER TABLE messages ADD COLUMN lease_until REAL",
            "ALTER TABLE messages ADD COLUMN tries INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE messages ADD COLUMN spec TEXT",
            "ALTER TABLE messages ADD COLUMN retry_recipients TEXT",
            "ALTER TABLE messages ADD COLUMN on_wire_at REAL",
            "CREATE INDEX messages_due ON messages(due_at) WHERE status='pending'",
            "CREATE INDEX messages_lease ON messages(lease_until) WHERE status='sending'",
            "CREATE TABLE fluxmail_outbox_rates (key TEXT PRIMARY KEY, next_at REAL NOT NULL)",
        ),
    ),
    # 8: who wrote the record (FluxMail(origin="mcp")); NULL when not given. Drafts use spec.
    (8, ("ALTER TABLE messages ADD COLUMN origin TEXT",)),
    # 9: the lease index holds outbox rows only. A bulk run's records are 'sending' with no
    # lease: each claim inserted an entry and each finish deleted it, for no query.
    (
        9,
        (
            "DROP INDEX messages_lease",
            "CREATE INDEX messages_lease ON messages(lease_until) "
            "WHERE status='sending' AND lease_until IS NOT NULL",
        ),
    ),
]
LATEST_VERSION = MIGRATIONS[-1][0]


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to LATEST_VERSION; the writer lock makes concurrent openers safe."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        if current > LATEST_VERSION:
            raise newer_schema("", current, LATEST_VERSION)
        for version, steps in MIGRATIONS:
            if version > current:
                for sql in steps:
                    conn.execute(sql)
                conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, time.time()))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


COLUMNS = (
    "id, created_at, updated_at, sent_at, status, backend, provider, host, sender, to_addrs, "
    "cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, recipients, "
    "attempts, base_attempts, final_reply, duration, metadata, folder, attachments, run_id, "
    "transport, provider_message_id, origin"
)
SELECT = f"SELECT {COLUMNS} FROM messages"


def dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    """Row factory: rows keyed by column name, as record_from_row reads them."""
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def configure(conn: sqlite3.Connection) -> None:
    """Per-connection settings. Switching a new file to WAL takes a lock that SQLite's busy
    handler does not wait for, so two processes opening a new store at once retry here."""
    import sqlite3

    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            # The kernel's page size for a new store (no effect on an existing file): every
            # commit writes the table's and each index's last, part-filled page to the WAL
            # again, so larger pages write more for the same rows (bench/audit_store.py).
            conn.execute("PRAGMA page_size=4096")
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    conn.execute("PRAGMA synchronous=NORMAL")
    # Checkpoints (the only fsyncs in WAL mode) every ~32 MB, not every 4 MB: fewer stalls in
    # the middle of a bulk run; crash safety is unchanged.
    conn.execute("PRAGMA wal_autocheckpoint=8000")
