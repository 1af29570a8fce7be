"""The PostgreSQL audit store's schema: table names, columns and forward migrations."""

from __future__ import annotations

from typing import Any

from fluxmail.audit.problems import newer_schema

__all__ = [
    "ATTACHMENTS_TABLE",
    "COLUMNS",
    "LATEST_VERSION",
    "MESSAGES_TABLE",
    "MIGRATIONS",
    "RATES_TABLE",
    "RUNS_TABLE",
    "SELECT",
    "migrate",
]

MESSAGES_TABLE = "fluxmail_audit_messages"
ATTACHMENTS_TABLE = "fluxmail_audit_attachments"
RUNS_TABLE = "fluxmail_audit_runs"
RATES_TABLE = "fluxmail_outbox_rates"  # the fleet-wide rate limit's slots, one row per key
_LOCK_ID = 0x666C7578  # pg_advisory_xact_lock key for migrations ("flux")
_T, _A, _R = MESSAGES_TABLE, ATTACHMENTS_TABLE, RUNS_TABLE

# Forward migrations, applied in order under an advisory lock. Append, never edit.
MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (
        1,
        (
            f"""CREATE TABLE {_T} (
                id text PRIMARY KEY,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                sent_at timestamptz,
                status text NOT NULL,
                backend text NOT NULL,
                provider text,
                host text,
                sender text NOT NULL,
                to_addrs jsonb NOT NULL,
                cc_addrs jsonb NOT NULL,
                bcc_addrs jsonb NOT NULL,
                subject text NOT NULL,
                message_id text NOT NULL,
                idempotency_key text UNIQUE,
                content_hash text NOT NULL,
                recipients jsonb NOT NULL DEFAULT '{{}}',
                attempts jsonb NOT NULL DEFAULT '[]',
                base_attempts integer NOT NULL DEFAULT 0,
                final_reply jsonb,
                duration double precision,
                metadata jsonb NOT NULL DEFAULT '{{}}',
                attachments jsonb NOT NULL DEFAULT '[]',
                eml bytea NOT NULL,
                body_text text,
                body_html text
            )""",
            f"CREATE INDEX {_T}_status ON {_T} (status, updated_at)",
            f"CREATE INDEX {_T}_created ON {_T} (created_at)",
            f"""CREATE TABLE {_A} (
                audit_id text NOT NULL REFERENCES {_T}(id) ON DELETE CASCADE,
                position integer NOT NULL,
                content bytea NOT NULL,
                PRIMARY KEY (audit_id, position)
            )""",
        ),
    ),
    # 2: bulk-run leases; a record's run and when it was handed to the wire (RunLease).
    (
        2,
        (
            f"ALTER TABLE {_T} ADD COLUMN run_id text, ADD COLUMN on_wire_at timestamptz",
            f"CREATE INDEX {_T}_run ON {_T} (run_id) WHERE status = 'sending'",
            f"""CREATE TABLE {_R} (
                token text PRIMARY KEY,
                lock_key integer NOT NULL,
                started_at timestamptz NOT NULL DEFAULT now()
            )""",
        ),
    ),
    # 3: the transport that took the message (a failover member's URL, no credentials).
    (3, (f"ALTER TABLE {_T} ADD COLUMN transport text",)),
    # 4: the id an HTTP API gave the message (SendGrid's X-Message-Id, Resend's id).
    (4, (f"ALTER TABLE {_T} ADD COLUMN provider_message_id text",)),
    # 5: the outbox (fluxmail.audit.outbox): schedule, lease, tries, the stored model.
    (
        5,
        (
            f"ALTER TABLE {_T} ADD COLUMN due_at timestamptz, ADD COLUMN deadline_at timestamptz, "
            "ADD COLUMN lease_owner text, ADD COLUMN lease_until timestamptz, "
            "ADD COLUMN tries integer NOT NULL DEFAULT 0, ADD COLUMN spec jsonb, "
            "ADD COLUMN retry_recipients jsonb",
            f"CREATE INDEX {_T}_due ON {_T} (due_at) WHERE status = 'pending'",
            f"CREATE INDEX {_T}_lease ON {_T} (lease_until) WHERE lease_owner IS NOT NULL",
            f"""CREATE TABLE {RATES_TABLE} (
                key text PRIMARY KEY,
                next_at double precision NOT NULL
            )""",
        ),
    ),
    # 6: who wrote the record (FluxMail(origin="mcp")); NULL when not given. Drafts use spec.
    (6, (f"ALTER TABLE {_T} ADD COLUMN origin text",)),
]
LATEST_VERSION = MIGRATIONS[-1][0]

_COLUMNS = (
    "id, created_at, updated_at, sent_at, status, backend, provider, host, sender, to_addrs, "
    "cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, recipients, "
    "attempts, base_attempts, final_reply, duration, metadata, attachments, run_id, transport, "
    "provider_message_id, origin"
)
COLUMNS = _COLUMNS  # for queries that read more than a record (drafts: spec, due_at)
SELECT = f"SELECT {_COLUMNS} FROM {_T}"


def migrate(conn: Any, location: str) -> None:
    """Bring the schema to LATEST_VERSION; the advisory lock serializes starting instances."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS fluxmail_audit_schema "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM fluxmail_audit_schema")
        current = row.fetchone()[0]
        if current > LATEST_VERSION:
            raise newer_schema(location, current, LATEST_VERSION)
        for version, steps in MIGRATIONS:
            if version > current:
                for sql in steps:
                    conn.execute(sql)
                conn.execute("INSERT INTO fluxmail_audit_schema (version) VALUES (%s)", (version,))
