"""The SQLite audit store: ``store.db`` (WAL) plus one snapshot folder per message.

Atomicity: every write runs in ``BEGIN IMMEDIATE`` (SQLite's writer lock, shared by every
process using the folder) and a unique index on ``idempotency_key`` backs it up, so a key is
claimed once across threads and processes. ``synchronous=NORMAL`` in WAL mode: a committed
record survives a process kill; a power loss may lose the last commits (never corrupts).
Within a process one connection is shared behind a lock (SQLite serializes writers anyway).
``sqlite3`` is imported when a store opens, not with this module.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxmail._lazy import lazy_module
from fluxmail.audit.connections import close_when_dropped
from fluxmail.audit.contract import AuditStore
from fluxmail.audit.deferred import PENDING_INTO, Materializer
from fluxmail.audit.ids import new_id
from fluxmail.audit.problems import not_found
from fluxmail.audit.rows import finish_values, loads
from fluxmail.audit.runs import DeadRun, WireJournal, dead_runs
from fluxmail.audit.snapshots import DB_NAME, logger, remove_snapshot
from fluxmail.audit.spool import dead_spools
from fluxmail.audit.sqlite_claims import claim_batch
from fluxmail.audit.sqlite_inserts import insert_rows
from fluxmail.audit.sqlite_reading import SQLiteReading
from fluxmail.audit.sqlite_recovery import resolve_run
from fluxmail.audit.sqlite_schema import (
    BUSY_TIMEOUT,
    LATEST_VERSION,
    MIGRATIONS,
    configure,
    dict_row,
    migrate,
)
from fluxmail.errors import AuditError

if TYPE_CHECKING:
    import sqlite3

    from fluxmail.audit import sqlite_drafts, sqlite_outbox
    from fluxmail.audit.records import Claim, Claims, DraftClaim, OutboundRecord
    from fluxmail.results import SendResult
else:  # loaded by the first draft or outbox call: a bulk run's store uses neither (~5 ms)
    sqlite_drafts = lazy_module("fluxmail.audit.sqlite_drafts")
    sqlite_outbox = lazy_module("fluxmail.audit.sqlite_outbox")

__all__ = ["BUSY_TIMEOUT", "LATEST_VERSION", "MIGRATIONS", "SQLiteStore"]

_FINISH = (
    "UPDATE messages SET status=?, recipients=?, attempts=?, final_reply=?, duration=?, "
    "sent_at=?, updated_at=?, transport=?, provider_message_id=? WHERE id=?"
)
_FINISH_FIRST = _FINISH + " AND base_attempts=0"


class SQLiteStore(SQLiteReading, AuditStore):
    """The audit store of one folder; safe to share between threads and processes."""

    def __init__(self, folder: Path, *, stale_after: float = 900.0) -> None:
        import sqlite3

        self._sqlite = sqlite3
        self.folder = Path(folder)
        self.location = str(self.folder)
        self._root = os.fspath(self.folder)  # snapshot paths are built as strings
        self._db = self.folder / DB_NAME
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._outbox: sqlite_outbox.SQLiteOutbox | None = None
        self._snapshots = Materializer(self._root, self._reading, self._transaction)
        self._runs: set[str] = set()  # bulk runs begun here: their new claims use a spool
        with self._lock:
            self._connection()
        self.recover_runs()  # first: a dead run's never-sent records must not turn 'unknown'
        self.recover_stale(older_than=stale_after)
        # A run killed before its deferred snapshots were written: write them now.
        self._snapshots.adopt(dead_spools(self._root))
        self.materialize_pending()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.location!r})"

    # --- connection and transactions --------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The process's connection; reopened after fork (a connection must not cross one)."""
        if self._conn is None or self._pid != os.getpid():
            try:
                conn = self._sqlite.connect(
                    self._db, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
                )
            except self._sqlite.Error as exc:
                raise self._error(exc) from exc
            try:
                configure(conn)
                migrate(conn)
            except BaseException as exc:
                conn.close()  # a schema this version cannot use, a locked or broken file
                if isinstance(exc, self._sqlite.Error):
                    raise self._error(exc) from exc
                raise
            self._conn, self._pid = conn, os.getpid()
            # Not at exit: the snapshot writer (a daemon thread) may be using it then; the
            # process's end leaves what it was writing to the next open, as a crash would.
            close_when_dropped(self, conn, at_exit=False)
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
                if isinstance(exc, (self._sqlite.Error, OSError)):
                    raise self._error(exc) from exc
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._connection().cursor()
            cursor.row_factory = dict_row
            try:
                yield cursor
            except self._sqlite.Error as exc:
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
    ) -> Claims:
        """Claim every record in one transaction (one commit); any error claims none.

        ``defer_snapshots`` (bulk runs): the snapshots are committed in the database with the
        records and written to their folders by a background thread (fluxmail.audit.deferred).
        ``run``: the token of the bulk run (``begin_run``) these claims belong to.
        """
        created: list[str] = []
        pending: list[tuple[Any, ...]] | None = [] if defer_snapshots else None
        spooled: list[bytes] | None = [] if defer_snapshots and run in self._runs else None
        dead: list[DeadRun] = []
        try:
            with self._transaction() as conn:
                claims = claim_batch(
                    conn, self._root, records, created, pending, run, dead, spooled
                )
                insert_rows(conn, PENDING_INTO, pending or ())
                if spooled:  # durable before the claims commit
                    assert run is not None
                    self._snapshots.spool(self._root, run).append(spooled)
        except BaseException:
            for rel in created:
                remove_snapshot(self.folder, rel)
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

    # --- bulk runs --------------------------------------------------------------------------

    def begin_run(self) -> WireJournal:
        """A bulk run's lease and wire journal (fluxmail.audit.runs); close it at the end.
        Its new records' snapshots go to its spool (fluxmail.audit.spool) until it ends."""
        lease = WireJournal(self._root, new_id(), ended=self._run_ended)
        self._runs.add(lease.token)
        return lease

    def _run_ended(self, token: str) -> None:
        self._runs.discard(token)
        self._snapshots.end_run(token)

    def recover_runs(self) -> int:
        """Resolve the records of every run whose process died; how many records."""
        count = 0
        for journal in dead_runs(self._root):
            try:
                with self._transaction() as conn:
                    count += resolve_run(conn, journal)
            except BaseException:
                journal.release(resolved=False)
                raise
            journal.release(resolved=True)
        return count

    # --- drafts (fluxmail.audit.sqlite_drafts) -----------------------------------------------

    def save_draft(self, record: OutboundRecord, spec: Mapping[str, Any]) -> str:
        return sqlite_drafts.save_draft(self, record, spec)

    def claim_draft(self, audit_id: str) -> DraftClaim:
        return sqlite_drafts.claim_draft(self, audit_id)

    def discard_draft(self, audit_id: str) -> None:
        sqlite_drafts.discard_draft(self, audit_id)

    # --- the outbox --------------------------------------------------------------------------

    def outbox(self) -> sqlite_outbox.SQLiteOutbox:
        """The outbox side (fluxmail.audit.sqlite_outbox), one per store."""
        with self._lock:
            if self._outbox is None:
                self._outbox = sqlite_outbox.SQLiteOutbox(self)
            return self._outbox

    # --- outcomes ---------------------------------------------------------------------------

    def finish(self, audit_id: str, result: SendResult) -> None:
        self.finish_many([(audit_id, result)])

    def finish_many(self, items: Sequence[tuple[str, SendResult]]) -> None:
        """Record outcomes in one transaction; attempts extend those of earlier claims.

        One executemany for the common case (a record's first attempt); only when some record
        had earlier attempts (or does not exist) is each one looked at.
        """
        now = time.time()
        values = [finish_values(result, (), now, audit_id) for audit_id, result in items]
        with self._transaction() as conn:
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

    # --- maintenance ------------------------------------------------------------------------

    def recover_stale(self, *, older_than: float) -> int:
        """Mark ``sending`` records not updated for ``older_than`` seconds ``unknown``.

        Outbox rows under a lease are left to ``expire_leases``: their lease says when the
        worker is gone, and an unmarked one goes back to ``pending`` rather than ``unknown``.
        """
        now = time.time()
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE messages SET status='unknown', updated_at=? "
                "WHERE status='sending' AND updated_at<? AND lease_owner IS NULL",
                (now, now - older_than),
            )
            return cursor.rowcount

    def close(self) -> None:
        """Write any deferred snapshots (kept in the database if that fails), then close."""
        try:
            self.materialize_pending()
        except AuditError as exc:
            logger.error("audit snapshots are waiting in the database: %s", exc)
        self._snapshots.stop()
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
