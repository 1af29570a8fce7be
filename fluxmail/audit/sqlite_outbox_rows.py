"""The SQLite outbox's SQL and row handling: claimed rows to Deliveries, leases that ran out.

Lists of ids are bound as one JSON array (``IN (SELECT value FROM json_each(?))``): any length
in one parameter, no matter SQLite's bound-parameter limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fluxmail.audit.outbox import Delivery
from fluxmail.audit.rows import dumps_plain, dumps_strings, loads
from fluxmail.audit.snapshots import logger
from fluxmail.results import RecipientStatus

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "CLAIM",
    "EACH",
    "MARK",
    "MARKABLE",
    "QUEUE",
    "RELEASE",
    "RENEW",
    "SETTLE_FINAL",
    "SETTLE_RETRY",
    "STATS",
    "deliveries",
    "due_rows",
    "expire",
    "snapshots",
    "unknown_recipients",
    "unreadable_failed",
]

EACH = "(SELECT value FROM json_each(?))"
# An enqueued row's outbox columns (claim_batch wrote the record itself).
QUEUE = (
    "UPDATE messages SET due_at=?, deadline_at=?, spec=?, tries=0, lease_owner=NULL, "
    "lease_until=NULL, retry_recipients=NULL, on_wire_at=NULL WHERE id=?"
)
_DUE = (
    "SELECT id, created_at, deadline_at, tries, spec, folder, attachments, recipients, "
    "attempts, retry_recipients FROM messages WHERE status='pending' AND due_at<=?"
)
CLAIM = (
    "UPDATE messages SET status='sending', lease_owner=?, lease_until=?, tries=tries+1, "
    "on_wire_at=NULL, updated_at=? WHERE id=?"
)
RENEW = "UPDATE messages SET lease_until=? WHERE lease_owner=? AND status='sending'"
# A lease that already ran out is refused: the row goes back to pending rather than unknown.
# (Selected, then updated, in one transaction: RETURNING needs SQLite 3.35.)
MARKABLE = (
    f"SELECT id FROM messages WHERE id IN {EACH} AND lease_owner=? "
    "AND status='sending' AND lease_until>=?"
)
MARK = f"UPDATE messages SET on_wire_at=? WHERE id IN {EACH}"
RELEASE = (
    "UPDATE messages SET status='pending', lease_owner=NULL, lease_until=NULL, "
    f"tries=MAX(tries-1, 0), updated_at=? WHERE id IN {EACH} AND lease_owner=? "
    "AND status='sending' AND on_wire_at IS NULL"
)
_HELD = "lease_owner=? AND status IN ('sending', 'unknown')"
SETTLE_RETRY = (
    "UPDATE messages SET status='pending', recipients=?, attempts=?, final_reply=?, "
    "duration=?, sent_at=NULL, updated_at=?, transport=?, provider_message_id=?, due_at=?, "
    "retry_recipients=?, lease_owner=NULL, lease_until=NULL, on_wire_at=NULL "
    f"WHERE id=? AND {_HELD}"
)
SETTLE_FINAL = (
    "UPDATE messages SET status=?, recipients=?, attempts=?, final_reply=?, duration=?, "
    "sent_at=?, updated_at=?, transport=?, provider_message_id=?, retry_recipients=NULL, "
    f"lease_owner=NULL, lease_until=NULL WHERE id=? AND {_HELD}"
)
_EXPIRE_UNMARKED = (
    "UPDATE messages SET status='pending', lease_owner=NULL, lease_until=NULL, "
    "tries=MAX(tries-1, 0), updated_at=? "
    "WHERE status='sending' AND lease_owner IS NOT NULL AND lease_until<? AND on_wire_at IS NULL"
)
_EXPIRED_MARKED = (
    "SELECT id, to_addrs, cc_addrs, bcc_addrs, recipients, retry_recipients FROM messages "
    "WHERE status='sending' AND lease_owner IS NOT NULL AND lease_until<? "
    "AND on_wire_at IS NOT NULL"
)
# lease_owner is kept: a late settle from that worker still records the real outcome.
_TO_UNKNOWN = "UPDATE messages SET status='unknown', recipients=?, updated_at=? WHERE id=?"
# Queued rows: a model to send and a due time (drafts keep a model but are never due).
_OUTBOX_ROW = "spec IS NOT NULL AND due_at IS NOT NULL"
STATS = (
    "SELECT COUNT(*) FILTER (WHERE status='pending'), "
    "COUNT(*) FILTER (WHERE status='pending' AND due_at<=:now), "
    "COUNT(*) FILTER (WHERE status='pending' AND due_at>:now), "
    "COUNT(*) FILTER (WHERE status='pending' AND tries>0), "
    "COUNT(*) FILTER (WHERE status='sending' AND lease_owner IS NOT NULL), "
    f"COUNT(*) FILTER (WHERE status='failed' AND {_OUTBOX_ROW}), "
    f"COUNT(*) FILTER (WHERE status='unknown' AND {_OUTBOX_ROW}), "
    "COUNT(*) FILTER (WHERE status='cancelled'), "
    "MIN(CASE WHEN status='pending' AND due_at<=:now THEN due_at END) "
    "FROM messages WHERE status IN ('pending', 'sending', 'failed', 'unknown', 'cancelled')"
)


def due_rows(
    conn: sqlite3.Connection, now: float, limit: int, ids: Sequence[str] | None
) -> list[tuple[Any, ...]]:
    """Due pending rows, oldest due first (only those of ``ids`` when given)."""
    sql = _DUE
    args: list[Any] = [now]
    if ids is not None:
        sql += f" AND id IN {EACH}"
        args.append(dumps_strings(list(ids)))
    return conn.execute(sql + " ORDER BY due_at LIMIT ?", (*args, max(0, limit))).fetchall()


def unknown_recipients(row: Sequence[Any]) -> str:
    """Recipients of a marked row whose lease ran out: those the try was for become unknown,
    what earlier tries recorded for the others stays."""
    _, to, cc, bcc, recipients, retry = row
    found: dict[str, Any] = dict(loads(recipients) or {})
    wanted = loads(retry) if retry else [*loads(to), *loads(cc), *loads(bcc)]
    for address in wanted:
        found[address] = RecipientStatus(address, "unknown").__dict__
    return dumps_plain(found)


def expire(conn: sqlite3.Connection, now: float) -> int:
    """Leases that ran out: unmarked rows pending again, marked ones unknown; how many."""
    count = conn.execute(_EXPIRE_UNMARKED, (now, now)).rowcount
    marked = conn.execute(_EXPIRED_MARKED, (now,)).fetchall()
    if marked:
        conn.executemany(_TO_UNKNOWN, [(unknown_recipients(r), now, r[0]) for r in marked])
    return count + len(marked)


def snapshots(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, tuple[bytes, Any]]:
    """Deferred snapshots still in the database (eml, concatenated files) of these rows."""
    sql = f"SELECT id, eml, files FROM pending_snapshots WHERE id IN {EACH}"
    return {r[0]: (bytes(r[1]), r[2]) for r in conn.execute(sql, (dumps_strings(list(ids)),))}


def _contents(
    root: str, row: Sequence[Any], snapshot: tuple[bytes, Any] | None
) -> tuple[bytes, tuple[bytes, ...]]:
    """The exact message bytes and the attachment contents in position order."""
    folder, manifest = f"{root}/{row[5]}", loads(row[6]) or []
    if snapshot is not None:
        eml, blob = snapshot
        view, offset, files = memoryview(blob or b""), 0, []
        for entry in manifest:
            files.append(bytes(view[offset : offset + int(entry["size"])]))
            offset += int(entry["size"])
        return eml, tuple(files)
    with open(f"{folder}/message.eml", "rb") as handle:
        eml = handle.read()
    files = []
    for entry in manifest:
        with open(f"{folder}/attachments/{entry['stored_as']}", "rb") as handle:
            files.append(handle.read())
    return eml, tuple(files)


def deliveries(
    root: str, rows: Sequence[Sequence[Any]], found: Mapping[str, tuple[bytes, Any]]
) -> tuple[list[Delivery], list[str]]:
    """Deliveries of claimed rows, and the ids whose snapshot could not be read."""
    out: list[Delivery] = []
    unreadable: list[str] = []
    for row in rows:
        try:
            eml, files = _contents(root, row, found.get(row[0]))
        except OSError as exc:
            logger.error("outbox row %s: its snapshot cannot be read (%s)", row[0], exc)
            unreadable.append(row[0])
            continue
        retry = loads(row[9]) if row[9] else None
        out.append(
            Delivery(
                audit_id=row[0], spec=loads(row[4]), eml=eml, attachments=files,
                recipients=tuple(retry) if retry is not None else None, tries=row[3],
                created_at=row[1], deadline_at=row[2], prior_recipients=loads(row[7]) or {},
                prior_attempts=tuple(loads(row[8]) or ()),
            )
        )  # fmt: skip
    return out, unreadable


def unreadable_failed(conn: sqlite3.Connection, ids: Sequence[str], now: float) -> None:
    """Rows whose snapshot is gone can never be sent: failed, not claimed again forever."""
    conn.execute(
        "UPDATE messages SET status='failed', lease_owner=NULL, lease_until=NULL, "
        f"updated_at=? WHERE id IN {EACH} AND status='sending'",
        (now, dumps_strings(list(ids))),
    )
