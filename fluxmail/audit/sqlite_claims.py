"""Claiming in the SQLite store: one batch of records in one transaction.

Per batch, not per message: one timestamp, day folder and run of ids, one SELECT of the keys,
one executemany of the new rows. Runs on the bulk sender's event loop, so the per-record
work is kept to building one tuple of column values (and one of the deferred snapshot).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxmail.audit.deferred import pending_row
from fluxmail.audit.ids import new_ids
from fluxmail.audit.records import Claim, Claims, OutboundRecord
from fluxmail.audit.rows import dumps, dumps_plain, dumps_strings, existing_claim
from fluxmail.audit.runs import DeadRun
from fluxmail.audit.snapshots import day_dir, write_attachments, write_snapshot
from fluxmail.audit.spool import frame_parts
from fluxmail.audit.sqlite_inserts import insert_rows
from fluxmail.audit.sqlite_recovery import resolve_dead_owners
from fluxmail.audit.sqlite_schema import SELECT, dict_row

if TYPE_CHECKING:
    import sqlite3

__all__ = ["claim_batch"]

_INSERT_INTO = (
    "INSERT INTO messages (id, created_at, updated_at, status, backend, provider, host, sender, "
    "to_addrs, cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, "
    "metadata, folder, attachments, run_id, origin)"
)

# spec=NULL: a draft (or outbox row) taken over by a send with its key is sent inline now.
_RETRY = (
    "UPDATE messages SET status=?, updated_at=?, sent_at=NULL, message_id=?, attachments=?, "
    "run_id=?, base_attempts=json_array_length(attempts), spec=NULL WHERE id=?"
)


def claim_batch(
    conn: sqlite3.Connection,
    root: str,
    records: Sequence[OutboundRecord],
    created: list[str],
    pending: list[tuple[Any, ...]] | None,
    run: str | None,
    dead: list[DeadRun],
    spooled: list[bytes] | None = None,
) -> Claims:
    """Claims in order, as claim() one by one would give. ``created``: snapshot folders written
    (removed by the caller on failure); ``pending``: deferred snapshot rows, of records with
    none pending any more (None: write the folders now); ``spooled``: the parts of the run's
    spool frames of its new records, in place of pending rows (fluxmail.audit.spool; a record
    claimed again keeps a pending row, which a rollback takes back); ``dead``: journals of dead
    runs resolved on the way (released by the caller).

    A key claimed earlier in the same batch is looked up again after the pending rows are in.
    """
    now = time.time()
    day = day_dir(now)
    keys = [r.idempotency_key for r in records]
    found = rows_by_key(conn, keys)
    if found and resolve_dead_owners(conn, root, found.values(), dead):
        found = rows_by_key(conn, keys)
    touched: set[str] = set()  # keys claimed in this batch: their stored row changed
    rows: list[tuple[Any, ...]] = []
    claims = Claims()
    for record, audit_id in zip(records, new_ids(len(records), now), strict=True):
        key = record.idempotency_key
        if key is not None:
            if key in touched:
                rows = _insert(conn, rows)
                found.update(rows_by_key(conn, [key]))
            touched.add(key)
            row = found.pop(key, None)
            if row is not None:
                claim = _claim_existing(conn, root, row, record, now, pending, run)
                claims.add(claim.audit_id, claim.replay)
                continue
        rel = f"{day}/{audit_id}"
        if pending is None:
            created.append(rel)
            manifest = write_snapshot(root, rel, record)
        else:
            if spooled is not None:
                spooled += frame_parts(audit_id, rel, record)
            else:
                pending.append(pending_row(audit_id, record))
            manifest = write_attachments(None, record.attachments) if record.attachments else []
        rows.append(_row(audit_id, rel, record, now, manifest, run))
        claims.add(audit_id)
    _insert(conn, rows)
    return claims


def _row(
    audit_id: str,
    rel: str,
    record: OutboundRecord,
    now: float,
    manifest: list[dict[str, Any]],
    run: str | None,
) -> tuple[Any, ...]:
    """The INSERT parameters of a new record (empty JSON values written as literals)."""
    return (
        audit_id, now, now, record.status, record.backend, record.provider, record.host,
        record.sender, dumps_strings(record.to),
        dumps_strings(record.cc) if record.cc else "[]",
        dumps_strings(record.bcc) if record.bcc else "[]",
        record.subject, record.message_id, record.idempotency_key, record.content_hash,
        dumps(dict(record.metadata)) if record.metadata else "{}", rel,
        dumps_plain(manifest) if manifest else "[]", run, record.origin,
    )  # fmt: skip


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """INSERT the waiting rows; returns a new empty list for the next ones."""
    insert_rows(conn, _INSERT_INTO, rows)
    return []


def rows_by_key(conn: sqlite3.Connection, keys: Sequence[str | None]) -> dict[str, dict[str, Any]]:
    """The stored rows of these idempotency keys (one query per 500 keys)."""
    wanted = list(dict.fromkeys(k for k in keys if k is not None))
    found: dict[str, dict[str, Any]] = {}
    cursor = conn.cursor()
    cursor.row_factory = dict_row
    for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit may be 999
        chunk = wanted[start : start + 500]
        marks = ",".join("?" * len(chunk))
        sql = f"{SELECT} WHERE idempotency_key IN ({marks})"
        found.update((row["idempotency_key"], row) for row in cursor.execute(sql, chunk))
    cursor.close()
    return found


def _claim_existing(
    conn: sqlite3.Connection,
    root: str,
    row: dict[str, Any],
    record: OutboundRecord,
    now: float,
    pending: list[tuple[Any, ...]] | None,
    run: str | None,
) -> Claim:
    found = existing_claim(row, record, Path(root) / row["folder"])
    if found is not None:
        return found
    # Nothing was accepted before: a new attempt on the same record, with the bytes it sends
    # (a deferred snapshot replaces any still pending; a written one supersedes it).
    conn.execute("DELETE FROM pending_snapshots WHERE id=?", (row["id"],))
    if pending is not None:
        pending.append(pending_row(row["id"], record))
        manifest = write_attachments(None, record.attachments)
    else:
        manifest = write_snapshot(root, row["folder"], record)
    conn.execute(_RETRY, (record.status, now, record.message_id, dumps(manifest), run, row["id"]))
    return Claim(row["id"])
