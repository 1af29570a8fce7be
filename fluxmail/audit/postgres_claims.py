"""Claiming in the PostgreSQL store: ``INSERT ... ON CONFLICT DO NOTHING``, then the stored row.

Idempotency rests on the UNIQUE key: a key already stored is read ``FOR UPDATE`` and replayed,
refused as a conflict, or retried on the same record. The snapshot (message bytes, bodies,
attachment copies) is written with the record, in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fluxmail.audit.ids import new_ids
from fluxmail.audit.postgres_runs import resolve_run
from fluxmail.audit.postgres_schema import ATTACHMENTS_TABLE, MESSAGES_TABLE, SELECT
from fluxmail.audit.records import Claim, OutboundRecord
from fluxmail.audit.rows import dumps, existing_claim
from fluxmail.audit.snapshots import write_attachments

__all__ = ["claim_batch", "claim_one"]

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
    return claim_batch(cursor, [record], run)[0]


def claim_batch(cursor: Any, records: Sequence[OutboundRecord], run: str | None) -> list[Claim]:
    """Records in the given order (sorted by key: two batches sharing keys cannot deadlock),
    in the cursor's transaction. The INSERTs go in one pipeline (psycopg's executemany: one
    round trip, not one a record); a key stored already is then looked at one by one."""
    now = time.time()
    ids = new_ids(len(records), now)
    manifests = [_manifest(record) for record in records]
    cursor.executemany(
        _INSERT,
        [
            _insert_values(i, r, now, m, run)
            for i, r, m in zip(ids, records, manifests, strict=True)
        ],
        returning=True,
    )
    inserted = []
    for _ in records:  # one result per INSERT: its id, or nothing on a key conflict
        inserted.append(cursor.fetchone() is not None)
        cursor.nextset()
    claims = []
    for audit_id, record, manifest, new in zip(ids, records, manifests, inserted, strict=True):
        if new:
            _store_attachments(cursor, audit_id, record, replace=False)
            claims.append(Claim(audit_id))
        else:
            claims.append(_claim_stored(cursor, record, manifest, now, run))
    return claims


def _manifest(record: OutboundRecord) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in item.items() if k != "stored_as"}
        for item in write_attachments(None, record.attachments)
    ]


def _insert_values(
    audit_id: str, record: OutboundRecord, now: float, manifest: list[dict[str, Any]],
    run: str | None,
) -> tuple[Any, ...]:  # fmt: skip
    return (
        audit_id, now, now, record.status, record.backend, record.provider, record.host,
        record.sender, dumps(record.to), dumps(record.cc), dumps(record.bcc),
        record.subject, record.message_id, record.idempotency_key, record.content_hash,
        dumps(dict(record.metadata)), dumps(manifest), record.eml, record.text,
        record.html, run, record.origin,
    )  # fmt: skip


def _claim_stored(
    cursor: Any, record: OutboundRecord, manifest: list[dict[str, Any]], now: float,
    run: str | None,
) -> Claim:  # fmt: skip
    """The record's key is stored: replay it, refuse a conflict, or retry the stored record."""
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
