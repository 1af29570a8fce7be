"""Drafts in the SQLite store: saved, claimed for their one send, discarded.

A draft is a record with status ``draft``, its snapshot folder written at once (message.eml,
bodies, attachment copies) and the model in ``spec``; ``due_at`` stays NULL, which tells it
from an outbox row. Every step is one ``BEGIN IMMEDIATE`` transaction, so two processes
sending the same draft cannot both flip it to ``sending``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fluxmail.audit.drafts import CLAIMABLE, not_a_draft, sendable
from fluxmail.audit.problems import conflict, not_found
from fluxmail.audit.records import DraftClaim, OutboundRecord
from fluxmail.audit.rows import dumps, loads, record_from_row
from fluxmail.audit.runs import DeadRun
from fluxmail.audit.snapshots import remove_snapshot
from fluxmail.audit.sqlite_claims import claim_batch, rows_by_key
from fluxmail.audit.sqlite_schema import COLUMNS

if TYPE_CHECKING:
    import sqlite3

__all__ = ["claim_draft", "discard_draft", "save_draft"]

_ROW = f"SELECT {COLUMNS}, spec, due_at FROM messages WHERE id=?"
_SPEC = "UPDATE messages SET spec=? WHERE id=?"
_CLAIM = (
    "UPDATE messages SET status='sending', updated_at=?, sent_at=NULL, run_id=NULL, "
    "base_attempts=json_array_length(attempts) WHERE id=? AND status IN ('draft', 'failed')"
)
_DISCARD = "DELETE FROM messages WHERE id=? AND status='draft' AND due_at IS NULL"


class _Store(Protocol):
    """What the drafts use of SQLiteStore (its transactions and folder)."""

    folder: Path
    _root: str

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...


def save_draft(store: _Store, record: OutboundRecord, spec: Mapping[str, Any]) -> str:
    """Store ``record`` (status ``draft``) and its model; a key already stored with the same
    content returns that record's id (nothing written), with other content a conflict."""
    key = record.idempotency_key
    created: list[str] = []
    dead: list[DeadRun] = []
    try:
        with store._transaction() as conn:
            if key is not None:
                found = rows_by_key(conn, [key]).get(key)
                if found is not None:
                    if found["content_hash"] != record.content_hash:
                        raise conflict(key)
                    return str(found["id"])
            [claim] = claim_batch(conn, store._root, [record], created, None, None, dead)
            conn.execute(_SPEC, (dumps(dict(spec)), claim.audit_id))
    except BaseException:
        for rel in created:
            remove_snapshot(store.folder, rel)
        for journal in dead:
            journal.release(resolved=False)
        raise
    for journal in dead:
        journal.release(resolved=True)
    return claim.audit_id


def claim_draft(store: _Store, audit_id: str) -> DraftClaim:
    """The draft, now ``sending`` with what to send; a replay when it was sent already."""
    with store._transaction() as conn:
        row = _row(conn, audit_id)
        folder = Path(store._root) / row["folder"]
        if not sendable(row):
            found = record_from_row(row, include_bcc=True, folder=folder)
            return DraftClaim(audit_id, replace(found.result(), replayed=True))
        eml, files = _contents(folder, loads(row["attachments"]) or [])
        if conn.execute(_CLAIM, (time.time(), audit_id)).rowcount != 1:
            raise not_a_draft(audit_id, row["status"])
    return DraftClaim(audit_id, None, loads(row["spec"]), eml, files)


def discard_draft(store: _Store, audit_id: str) -> None:
    """Delete a record that is still a draft, with its snapshot folder."""
    with store._transaction() as conn:
        row = _row(conn, audit_id)
        if row["status"] != "draft" or conn.execute(_DISCARD, (audit_id,)).rowcount != 1:
            raise not_a_draft(audit_id, row["status"])
        conn.execute("DELETE FROM pending_snapshots WHERE id=?", (audit_id,))
    remove_snapshot(store.folder, row["folder"])


def _row(conn: sqlite3.Connection, audit_id: str) -> dict[str, Any]:
    """The record of a draft (or of a sent draft); anything else is refused."""
    cursor = conn.execute(_ROW, (audit_id,))
    values = cursor.fetchone()
    if values is None:
        raise not_found(audit_id)
    row = {d[0]: v for d, v in zip(cursor.description, values, strict=True)}
    if row["spec"] is None or row["due_at"] is not None or row["status"] not in CLAIMABLE:
        raise not_a_draft(audit_id, row["status"])
    return row


def _contents(folder: Path, manifest: list[dict[str, Any]]) -> tuple[bytes, tuple[bytes, ...]]:
    """The exact bytes saved and the attachment copies in position order."""
    eml = (folder / "message.eml").read_bytes()
    files = tuple((folder / "attachments" / e["stored_as"]).read_bytes() for e in manifest)
    return eml, files
