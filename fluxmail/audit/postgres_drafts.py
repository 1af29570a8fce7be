"""Drafts in the PostgreSQL store: saved, claimed for their one send, discarded.

The same rules as the SQLite store (fluxmail.audit.drafts). ``claim_draft`` reads the row
``FOR UPDATE``: a second instance sending the same draft waits, then finds it ``sending`` (or
sent) and replays it. The snapshot lives in the row and the attachments table.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from fluxmail.audit.drafts import CLAIMABLE, not_a_draft, sendable
from fluxmail.audit.postgres_claims import claim_one
from fluxmail.audit.postgres_schema import ATTACHMENTS_TABLE, COLUMNS, MESSAGES_TABLE
from fluxmail.audit.problems import conflict, not_found
from fluxmail.audit.records import DraftClaim, OutboundRecord
from fluxmail.audit.rows import dumps, loads, record_from_row

__all__ = ["claim_draft", "discard_draft", "save_draft"]

_T, _A = MESSAGES_TABLE, ATTACHMENTS_TABLE
_ROW = f"SELECT {COLUMNS}, spec, due_at FROM {_T} WHERE id=%s FOR UPDATE"
_CLAIM = (
    f"UPDATE {_T} SET status='sending', updated_at=to_timestamp(%s), sent_at=NULL, "
    "run_id=NULL, on_wire_at=NULL, base_attempts=jsonb_array_length(attempts) "
    "WHERE id=%s AND status IN ('draft', 'failed')"
)


def save_draft(cursor: Any, record: OutboundRecord, spec: Mapping[str, Any]) -> str:
    """Store ``record`` (status ``draft``) and its model, in the cursor's transaction (rows as
    dicts); a key already stored with the same content returns that record's id."""
    key = record.idempotency_key
    if key is not None:
        cursor.execute(
            f"SELECT id, content_hash FROM {_T} WHERE idempotency_key=%s FOR UPDATE", (key,)
        )
        found = cursor.fetchone()
        if found is not None:
            if found["content_hash"] != record.content_hash:
                raise conflict(key)
            return str(found["id"])
    claim = claim_one(cursor, record, None)
    cursor.execute(
        f"UPDATE {_T} SET spec=%s::jsonb WHERE id=%s", (dumps(dict(spec)), claim.audit_id)
    )
    return claim.audit_id


def claim_draft(cursor: Any, audit_id: str) -> DraftClaim:
    """The draft, now ``sending`` with what to send; a replay when it was sent already."""
    row = _row(cursor, audit_id)
    if not sendable(row):
        found = record_from_row(row, include_bcc=True, folder=None)
        return DraftClaim(audit_id, replace(found.result(), replayed=True))
    cursor.execute(f"SELECT eml FROM {_T} WHERE id=%s", (audit_id,))
    eml = bytes(cursor.fetchone()["eml"])
    cursor.execute(f"SELECT content FROM {_A} WHERE audit_id=%s ORDER BY position", (audit_id,))
    files = tuple(bytes(r["content"]) for r in cursor.fetchall())
    cursor.execute(_CLAIM, (time.time(), audit_id))
    return DraftClaim(audit_id, None, loads(row["spec"]), eml, files)


def discard_draft(cursor: Any, audit_id: str) -> None:
    """Delete a record that is still a draft (its attachments go with it: ON DELETE CASCADE)."""
    row = _row(cursor, audit_id)
    if row["status"] != "draft":
        raise not_a_draft(audit_id, row["status"])
    cursor.execute(f"DELETE FROM {_T} WHERE id=%s", (audit_id,))


def _row(cursor: Any, audit_id: str) -> dict[str, Any]:
    """The record of a draft (or of a sent draft), locked; anything else is refused."""
    cursor.execute(_ROW, (audit_id,))
    row: dict[str, Any] | None = cursor.fetchone()
    if row is None:
        raise not_found(audit_id)
    if row["spec"] is None or row["due_at"] is not None or row["status"] not in CLAIMABLE:
        raise not_a_draft(audit_id, row["status"])
    return row
