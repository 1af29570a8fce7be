"""Claiming in the PostgreSQL store: ``INSERT ... ON CONFLICT DO NOTHING``, then the stored row.

Idempotency rests on the UNIQUE key: a key already stored is read ``FOR UPDATE`` and replayed,
refused as a conflict, or retried on the same record. The snapshot (message bytes, bodies,
attachment copies) is written with the record, in the same transaction.
"""

from __future__ import annotations

import time
from typing import Any

from fluxmail.audit.ids import new_id
from fluxmail.audit.postgres_runs import resolve_run
from fluxmail.audit.postgres_schema import ATTACHMENTS_TABLE, MESSAGES_TABLE, SELECT
from fluxmail.audit.records import Claim, OutboundRecord
from fluxmail.audit.rows import dumps, existing_claim
from fluxmail.audit.snapshots import write_attachments

__all__ = ["claim_one"]

_T, _A = MESSAGES_TABLE, ATTACHMENTS_TABLE
_INSERT = (
    f"INSERT INTO {_T} (id, created_at, updated_at, status, backend, provider, host, sender, "
    "to_addrs, cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, "
    "metadata, attachments, eml, body_text, body_html, run_id, origin) VALUES (%s, "
    "to_timestamp(%s), to_timestamp(%s), %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, "
    "%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)
# spec=NULL: a draft (or outbox row) taken over by a send with its key is sent inline now.
_RETRY = (
    f"UPDATE {_T} SET status=%s, updated_at=to_timestamp(%s), sent_at=NULL, message_id=%s, "
    "attachments=%s::jsonb, eml=%s, body_text=%s, body_html=%s, run_id=%s, on_wire_at=NULL, "
    "base_attempts=jsonb_array_length(attempts), spec=NULL WHERE id=%s"
)


def claim_one(cursor: Any, record: OutboundRecord, run: str | None) -> Claim:
    """One record, in the cursor's transaction (rows as dicts)."""
    now = time.time()
    audit_id = new_id(now)
    manifest = [
        {k: v for k, v in item.items() if k != "stored_as"}
        for item in write_attachments(None, record.attachments)
    ]
    cursor.execute(
        _INSERT,
        (
            audit_id, now, now, record.status, record.backend, record.provider, record.host,
            record.sender, dumps(record.to), dumps(record.cc), dumps(record.bcc),
            record.subject, record.message_id, record.idempotency_key, record.content_hash,
            dumps(dict(record.metadata)), dumps(manifest), record.eml, record.text,
            record.html, run, record.origin,
        ),
    )  # fmt: skip
    if cursor.fetchone() is not None:
        _store_attachments(cursor, audit_id, record, replace=False)
        return Claim(audit_id)
    cursor.execute(f"{SELECT} WHERE idempotency_key=%s FOR UPDATE", (record.idempotency_key,))
    row = cursor.fetchone()
    if row["status"] == "sending" and row["run_id"] and resolve_run(cursor, row["run_id"]):
        # Its run had died while this store was open: read what the recovery made of it.
        cursor.execute(f"{SELECT} WHERE id=%s", (row["id"],))
        row = cursor.fetchone()
    found = existing_claim(row, record, None)
    if found is not None:
        return found
    cursor.execute(
        _RETRY,
        (
            record.status, now, record.message_id, dumps(manifest), record.eml, record.text,
            record.html, run, row["id"],
        ),
    )  # fmt: skip
    _store_attachments(cursor, row["id"], record, replace=True)
    return Claim(row["id"])


def _store_attachments(
    cursor: Any, audit_id: str, record: OutboundRecord, *, replace: bool
) -> None:
    if replace:
        cursor.execute(f"DELETE FROM {_A} WHERE audit_id=%s", (audit_id,))
    if record.attachments:
        cursor.executemany(
            f"INSERT INTO {_A} (audit_id, position, content) VALUES (%s, %s, %s)",
            [(audit_id, n, content) for n, (_, _, content) in enumerate(record.attachments)],
        )
