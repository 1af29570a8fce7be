"""The SQLite audit store: ``store.db`` (WAL) plus one snapshot folder per message.

Atomicity: every write runs in ``BEGIN IMMEDIATE`` (SQLite's writer lock, shared by every
process using the folder) and a unique index on ``idempotency_key`` backs it up, so a key is
claimed once across threads and processes. ``synchronous=NORMAL`` in WAL mode: a committed
record survives a process kill; a power loss may lose the last commits (never corrupts).
Within a process one connection is shared behind a lock (SQLite serializes writers anyway).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fluxmail.audit import runs, snapshots
from fluxmail.audit.deferred import INSERT_PENDING, Materializer, pending_row
from fluxmail.audit.sqlite_schema import LATEST_VERSION, MIGRATIONS, migrate
from fluxmail.audit.store import (
    AuditRecord,
    Claim,
    OutboundRecord,
    cutoff_epoch,
    dumps,
    dumps_plain,
    dumps_strings,
    existing_claim,
    finish_values,
    list_query,
    loads,
    never_sent_recipients,
    new_id,
    not_found,
    record_from_row,
)
from fluxmail.errors import AuditError
from fluxmail.results import SendResult

__all__ = ["LATEST_VERSION", "MIGRATIONS", "SQLiteStore"]

BUSY_TIMEOUT = 30.0  # seconds a writer waits for another process's transaction

_COLUMNS = (
    "id, created_at, updated_at, sent_at, status, backend, provider, host, sender, to_addrs, "
    "cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, recipients, "
    "attempts, base_attempts, final_reply, duration, metadata, folder, attachments, run_id"
)
_SELECT = f"SELECT {_COLUMNS} FROM messages"
_INSERT = (
    "INSERT INTO messages (id, created_at, updated_at, status, backend, provider, host, sender, "
    "to_addrs, cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, "
    "metadata, folder, attachments, run_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_RETRY = (
    "UPDATE messages SET status=?, updated_at=?, sent_at=NULL, message_id=?, attachments=?, "
    "run_id=?, base_attempts=json_array_length(attempts) WHERE id=?"
)
# Recovering a dead run (fluxmail.audit.runs): what may have gone out, and what never did.
_RUN_SENDING = (
    "SELECT id, to_addrs, cc_addrs, bcc_addrs FROM messages WHERE run_id=? AND status='sending'"
)
_RUN_UNKNOWN = "UPDATE messages SET status='unknown', updated_at=? WHERE id=? AND status='sending'"
_RUN_NEVER_SENT = (
    "UPDATE messages SET status='failed', recipients=?, final_reply=NULL, sent_at=NULL, "
    "updated_at=? WHERE id=? AND status='sending'"
)
_FINISH = (
    "UPDATE messages SET status=?, recipients=?, attempts=?, final_reply=?, duration=?, "
    "sent_at=?, updated_at=? WHERE id=?"
)
_FINISH_FIRST = _FINISH + " AND base_attempts=0"


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


class SQLiteStore:
    """The audit store of one folder; safe to share between threads and processes."""

    def __init__(self, folder: Path, *, stale_after: float = 900.0) -> None:
        self.folder = Path(folder)
        self.location = str(self.folder)
        self._root = os.fspath(self.folder)  # snapshot paths are built as strings
        self._db = self.folder / snapshots.DB_NAME
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._snapshots = Materializer(self._root, self._reading, self._transaction)
        with self._lock:
            self._connection()
        self.recover_runs()  # first: a dead run's never-sent records must not turn 'unknown'
        self.recover_stale(older_than=stale_after)
        # A run killed before its deferred snapshots were written: write them now.
        self.materialize_pending()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.location!r})"

    # --- connection and transactions --------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The process's connection; reopened after fork (a connection must not cross one)."""
        if self._conn is None or self._pid != os.getpid():
            try:
                conn = sqlite3.connect(
                    self._db, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
                )
                _configure(conn)
                migrate(conn)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _error(self, exc: BaseException) -> AuditError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return AuditError(
                f"the audit database in {self.location} stayed locked by another process "
                f"for {BUSY_TIMEOUT:.0f}s (nothing was sent)",
                code="audit_unavailable",
            )
        return AuditError(
            f"the audit folder {self.location} cannot be written ({text}); nothing was sent",
            code="audit_unwritable",
        )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the lock; failures roll back, map to AuditError."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, (sqlite3.Error, OSError)):
                    raise self._error(exc) from exc
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._connection().cursor()
            cursor.row_factory = _dict_row
            try:
                yield cursor
            except sqlite3.Error as exc:
                raise AuditError(
                    f"the audit database in {self.location} cannot be read ({exc})",
                    code="audit_unavailable",
                ) from exc
            finally:
                cursor.close()

    # --- claiming ---------------------------------------------------------------------------

    def claim(self, record: OutboundRecord) -> Claim:
        return self.claim_many([record])[0]

    def claim_many(
        self,
        records: Sequence[OutboundRecord],
        *,
        defer_snapshots: bool = False,
        run: str | None = None,
    ) -> list[Claim]:
        """Claim every record in one transaction (one commit); any error claims none.

        ``defer_snapshots`` (bulk runs): the snapshots are committed in the database with the
        records and written to their folders by a background thread (fluxmail.audit.deferred).
        ``run``: the token of the bulk run (``begin_run``) these claims belong to.
        """
        created: list[str] = []
        pending: list[tuple[Any, ...]] | None = [] if defer_snapshots else None
        dead: list[runs.DeadRun] = []
        try:
            with self._transaction() as conn:
                claims = self._claim_batch(conn, records, created, pending, run, dead)
                if pending:
                    conn.executemany(INSERT_PENDING, pending)
        except BaseException:
            for rel in created:
                snapshots.remove_snapshot(self.folder, rel)
            for journal in dead:
                journal.release(resolved=False)
            raise
        for journal in dead:
            journal.release(resolved=True)
        if pending:
            self._snapshots.wake()
        return claims

    def hold_snapshots(self) -> AbstractContextManager[None]:
        """Keep the background snapshot writer idle for the duration (a bulk run)."""
        return self._snapshots.held()

    def materialize_pending(self) -> int:
        """Write every deferred snapshot to its folder now (in this thread); how many."""
        return self._snapshots.drain()

    def _claim_batch(
        self,
        conn: sqlite3.Connection,
        records: Sequence[OutboundRecord],
        created: list[str],
        pending: list[tuple[Any, ...]] | None,
        run: str | None,
        dead: list[runs.DeadRun],
    ) -> list[Claim]:
        """Claims in order, as claim() one by one would give; new rows go in one executemany.

        Per batch, not per message: one timestamp and day folder, one SELECT of the keys. A key
        claimed earlier in the same batch is looked up again after the pending rows are in.
        """
        now = time.time()
        day = snapshots.day_dir(now)
        keys = [r.idempotency_key for r in records]
        found = self._rows_by_key(conn, keys)
        if self._resolve_dead_owners(conn, found.values(), dead):
            found = self._rows_by_key(conn, keys)
        touched: set[str] = set()  # keys claimed in this batch: their stored row changed
        rows: list[tuple[Any, ...]] = []
        claims: list[Claim] = []
        for record in records:
            key = record.idempotency_key
            if key is not None:
                if key in touched:
                    rows = self._insert(conn, rows)
                    found.update(self._rows_by_key(conn, [key]))
                touched.add(key)
                row = found.pop(key, None)
                if row is not None:
                    claims.append(self._claim_existing(conn, row, record, now, pending, run))
                    continue
            audit_id = new_id(now)
            rel = f"{day}/{audit_id}"
            if pending is None:
                created.append(rel)
            else:
                pending.append(pending_row(audit_id, record))
            rows.append(self._new_row(audit_id, rel, record, now, pending is None, run))
            claims.append(Claim(audit_id))
        self._insert(conn, rows)
        return claims

    def _new_row(
        self,
        audit_id: str,
        rel: str,
        record: OutboundRecord,
        now: float,
        write: bool,
        run: str | None,
    ) -> tuple[Any, ...]:
        """Write the snapshot folder (unless deferred); the INSERT parameters of its record."""
        if write:
            manifest = snapshots.write_snapshot(self._root, rel, record)
        else:
            manifest = snapshots.write_attachments(None, record.attachments)
        return (
            audit_id, now, now, record.status, record.backend, record.provider, record.host,
            record.sender, dumps_strings(record.to), dumps_strings(record.cc),
            dumps_strings(record.bcc), record.subject, record.message_id, record.idempotency_key,
            record.content_hash, dumps(dict(record.metadata)) if record.metadata else "{}", rel,
            dumps_plain(manifest) if manifest else "[]", run,
        )  # fmt: skip

    @staticmethod
    def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """INSERT the pending rows; returns a new empty list for the next ones."""
        if rows:
            conn.executemany(_INSERT, rows)
        return []

    @staticmethod
    def _rows_by_key(
        conn: sqlite3.Connection, keys: Sequence[str | None]
    ) -> dict[str, dict[str, Any]]:
        """The stored rows of these idempotency keys (one query per 500 keys)."""
        wanted = list(dict.fromkeys(k for k in keys if k is not None))
        found: dict[str, dict[str, Any]] = {}
        cursor = conn.cursor()
        cursor.row_factory = _dict_row
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"{_SELECT} WHERE idempotency_key IN ({marks})"
            found.update((row["idempotency_key"], row) for row in cursor.execute(sql, chunk))
        cursor.close()
        return found

    def _claim_existing(
        self,
        conn: sqlite3.Connection,
        row: dict[str, Any],
        record: OutboundRecord,
        now: float,
        pending: list[tuple[Any, ...]] | None,
        run: str | None,
    ) -> Claim:
        found = existing_claim(row, record, self.folder / row["folder"])
        if found is not None:
            return found
        # Nothing was accepted before: a new attempt on the same record, with the bytes it sends
        # (a deferred snapshot replaces any still pending; a written one supersedes it).
        if pending is not None:
            pending.append(pending_row(row["id"], record))
            manifest = snapshots.write_attachments(None, record.attachments)
        else:
            conn.execute("DELETE FROM pending_snapshots WHERE id=?", (row["id"],))
            manifest = snapshots.write_snapshot(self._root, row["folder"], record)
        conn.execute(
            _RETRY, (record.status, now, record.message_id, dumps(manifest), run, row["id"])
        )
        return Claim(row["id"])

    # --- bulk runs --------------------------------------------------------------------------

    def begin_run(self) -> runs.WireJournal:
        """A bulk run's lease and wire journal (fluxmail.audit.runs); close it at the end."""
        return runs.WireJournal(self._root, new_id())

    def recover_runs(self) -> int:
        """Resolve the records of every run whose process died; how many records."""
        count = 0
        for journal in runs.dead_runs(self._root):
            try:
                with self._transaction() as conn:
                    count += self._resolve_run(conn, journal)
            except BaseException:
                journal.release(resolved=False)
                raise
            journal.release(resolved=True)
        return count

    def _resolve_dead_owners(
        self, conn: sqlite3.Connection, rows: Any, dead: list[runs.DeadRun]
    ) -> bool:
        """Before keys are replayed: resolve the runs, now dead, that left these rows 'sending'
        (a run that died while this store was open; a live one, even of this process, holds
        its lock). True if any row changed."""
        tokens = {r["run_id"] for r in rows if r["status"] == "sending" and r["run_id"]}
        changed = False
        for token in sorted(tokens):
            journal = runs.dead_run(self._root, token)
            if journal is not None:
                dead.append(journal)
                changed = self._resolve_run(conn, journal) > 0 or changed
        return changed

    @staticmethod
    def _resolve_run(conn: sqlite3.Connection, journal: runs.DeadRun) -> int:
        """A dead run's 'sending' records: journaled ones 'unknown', the others never sent."""
        cursor = conn.cursor()
        cursor.row_factory = _dict_row
        rows = cursor.execute(_RUN_SENDING, (journal.token,)).fetchall()
        cursor.close()
        now = time.time()
        on_wire = journal.on_wire
        conn.executemany(_RUN_UNKNOWN, [(now, r["id"]) for r in rows if r["id"] in on_wire])
        conn.executemany(
            _RUN_NEVER_SENT,
            [(never_sent_recipients(r), now, r["id"]) for r in rows if r["id"] not in on_wire],
        )
        return len(rows)

    # --- outcomes ---------------------------------------------------------------------------

    def finish(self, audit_id: str, result: SendResult) -> None:
        self.finish_many([(audit_id, result)])

    def finish_many(self, items: Sequence[tuple[str, SendResult]]) -> None:
        """Record outcomes in one transaction; attempts extend those of earlier claims.

        One executemany for the common case (a record's first attempt); only when some record
        had earlier attempts (or does not exist) is each one looked at.
        """
        with self._transaction() as conn:
            now = time.time()
            values = [finish_values(result, [], now, audit_id) for audit_id, result in items]
            if conn.executemany(_FINISH_FIRST, values).rowcount == len(values):
                return
            for audit_id, result in items:
                row = conn.execute(
                    "SELECT attempts, base_attempts FROM messages WHERE id=?", (audit_id,)
                ).fetchone()
                if row is None:
                    raise not_found(audit_id)
                if row[1]:  # a retried record: keep the attempts of the earlier claims
                    prior = list(loads(row[0]))[: row[1]]
                    conn.execute(_FINISH, finish_values(result, prior, now, audit_id))

    # --- reading ----------------------------------------------------------------------------

    def list(
        self,
        *,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        include_bcc: bool = False,
    ) -> list[AuditRecord]:
        """Newest first; BCC left out unless ``include_bcc``."""
        sql, args = list_query(_SELECT, status, since, limit, mark="?", epoch="?")
        with self._reading() as cursor:
            rows = cursor.execute(sql, args).fetchall()
        self._ensure_folders([row["id"] for row in rows])
        return [self._record(row, include_bcc) for row in rows]

    def get(self, audit_id: str, *, include_bcc: bool = False) -> AuditRecord:
        with self._reading() as cursor:
            row = cursor.execute(f"{_SELECT} WHERE id=?", (audit_id,)).fetchone()
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
            raise AuditError(
                f"the snapshot of audit record {audit_id!r} is missing from {record.folder}",
                code="not_found",
            ) from exc

    def _ensure_folders(self, ids: Sequence[str]) -> None:
        """Reading returns folders: write those of these records that are still pending."""
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

    # --- maintenance ------------------------------------------------------------------------

    def prune(self, *, older_than: timedelta | datetime) -> int:
        """Delete records created before the cutoff (except in-flight ``sending``) and folders.

        A pruned idempotency key can be used again: keep records as long as retries may come.
        """
        cutoff = cutoff_epoch(older_than)
        where = "WHERE created_at<? AND status!='sending'"
        with self._transaction() as conn:
            rels = [r[0] for r in conn.execute(f"SELECT folder FROM messages {where}", (cutoff,))]
            conn.execute(
                f"DELETE FROM pending_snapshots WHERE id IN (SELECT id FROM messages {where})",
                (cutoff,),
            )
            conn.execute(f"DELETE FROM messages {where}", (cutoff,))
        for rel in rels:
            snapshots.remove_snapshot(self.folder, rel)
        return len(rels)

    def recover_stale(self, *, older_than: float) -> int:
        """Mark ``sending`` records not updated for ``older_than`` seconds ``unknown``."""
        now = time.time()
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE messages SET status='unknown', updated_at=? "
                "WHERE status='sending' AND updated_at<?",
                (now, now - older_than),
            )
            return cursor.rowcount

    def close(self) -> None:
        """Write any deferred snapshots (kept in the database if that fails), then close."""
        try:
            self.materialize_pending()
        except AuditError as exc:
            snapshots.logger.error("audit snapshots are waiting in the database: %s", exc)
        self._snapshots.stop()
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def _configure(conn: sqlite3.Connection) -> None:
    """Per-connection settings. Switching a new file to WAL takes a lock that SQLite's busy
    handler does not wait for, so two processes opening a new store at once retry here."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            # Larger pages for a new store: a bulk commit writes a few hundred KB, and SQLite
            # writes the WAL one page per system call (no effect on an existing file).
            conn.execute("PRAGMA page_size=16384")
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
