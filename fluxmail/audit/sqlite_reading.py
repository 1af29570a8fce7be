"""Reading and pruning the SQLite store (the SQLiteStore's read side, as a mixin).

Reads return snapshot folders, so a record whose deferred snapshot is still pending has its
folder written first.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxmail.audit.problems import not_found
from fluxmail.audit.records import AuditRecord
from fluxmail.audit.rows import cutoff_epoch, list_query, record_from_row
from fluxmail.audit.snapshots import remove_snapshot
from fluxmail.audit.spool import spooled_eml
from fluxmail.audit.sqlite_schema import SELECT
from fluxmail.errors import AuditError

if TYPE_CHECKING:
    import sqlite3

    from fluxmail.audit.deferred import Materializer

__all__ = ["SQLiteReading"]


class SQLiteReading:
    """list / get / get_eml / prune over the store's connection (provided by SQLiteStore)."""

    folder: Path
    _snapshots: Materializer

    def _reading(self) -> AbstractContextManager[sqlite3.Cursor]:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def list(
        self,
        *,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        include_bcc: bool = False,
    ) -> list[AuditRecord]:
        """Newest first; BCC left out unless ``include_bcc``."""
        sql, args = list_query(SELECT, status, since, limit, mark="?", epoch="?")
        with self._reading() as cursor:
            rows = cursor.execute(sql, args).fetchall()
        self._ensure_folders([row["id"] for row in rows])
        return [self._record(row, include_bcc) for row in rows]

    def get(self, audit_id: str, *, include_bcc: bool = False) -> AuditRecord:
        with self._reading() as cursor:
            row = cursor.execute(f"{SELECT} WHERE id=?", (audit_id,)).fetchone()
        if row is None:
            raise not_found(audit_id)
        self._ensure_folders([audit_id])
        return self._record(row, include_bcc)

    def get_eml(self, audit_id: str) -> bytes:
        """The exact bytes sent (message.eml, or the database while the snapshot is pending)."""
        with self._reading() as cursor:
            row = cursor.execute(
                "SELECT eml FROM pending_snapshots WHERE id=?", (audit_id,)
            ).fetchone()
        if row is not None:
            return bytes(row["eml"])
        record = self.get(audit_id)
        assert record.folder is not None
        try:
            return (record.folder / "message.eml").read_bytes()
        except FileNotFoundError as exc:
            # A bulk run of another process still sending: the bytes are in its spool.
            with self._reading() as cursor:
                run = cursor.execute("SELECT run_id FROM messages WHERE id=?", (audit_id,))
                token = (run.fetchone() or {}).get("run_id")
            spooled = spooled_eml(str(self.folder), token, audit_id) if token else None
            if spooled is not None:
                return spooled
            raise AuditError(
                f"the snapshot of audit record {audit_id!r} is missing from {record.folder}",
                code="not_found",
            ) from exc

    def prune(self, *, older_than: timedelta | datetime) -> int:
        """Delete records created before the cutoff (except in-flight ``sending`` and outbox
        rows still ``pending``: a message waiting for its worker is never lost) and folders.

        A pruned idempotency key can be used again: keep records as long as retries may come.
        """
        cutoff = cutoff_epoch(older_than)
        where = "WHERE created_at<? AND status NOT IN ('sending', 'pending')"
        with self._transaction() as conn:
            rels = [r[0] for r in conn.execute(f"SELECT folder FROM messages {where}", (cutoff,))]
            conn.execute(
                f"DELETE FROM pending_snapshots WHERE id IN (SELECT id FROM messages {where})",
                (cutoff,),
            )
            conn.execute(f"DELETE FROM messages {where}", (cutoff,))
        for rel in rels:
            remove_snapshot(self.folder, rel)
        return len(rels)

    def _ensure_folders(self, ids: Sequence[str]) -> None:
        """Reading returns folders: write those of these records that are still pending."""
        if self._snapshots.spooling:  # a run of this process is sending, or just ended
            self._snapshots.drain_spools()
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit may be 999
            chunk = list(ids[start : start + 500])
            with self._reading() as cursor:
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT id FROM pending_snapshots WHERE id IN ({marks})"
                pending = [row["id"] for row in cursor.execute(sql, chunk)]
            if pending:
                self._snapshots.drain(pending)

    def _record(self, row: dict[str, Any], include_bcc: bool) -> AuditRecord:
        return record_from_row(row, include_bcc=include_bcc, folder=self.folder / row["folder"])
