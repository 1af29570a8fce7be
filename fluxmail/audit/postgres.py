"""The PostgreSQL audit store: one audit trail and one idempotency guarantee for a fleet.

Same behaviour as the SQLite store; the snapshot (message.eml bytes, bodies, attachment
copies) lives in the database (bytea/text) so every instance can read every record.
Idempotency rests on a UNIQUE key: ``INSERT ... ON CONFLICT DO NOTHING`` then
``SELECT ... FOR UPDATE``, committed before claim() returns. psycopg 3 is imported lazily
and no connection is opened before the first call (Lambda cold starts stay cheap).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fluxmail.audit import postgres_drafts
from fluxmail.audit.connections import close_when_dropped
from fluxmail.audit.contract import AuditStore
from fluxmail.audit.ids import new_id
from fluxmail.audit.postgres_claims import claim_batch
from fluxmail.audit.postgres_outbox import PostgresOutbox
from fluxmail.audit.postgres_runs import PostgresRun, recover_runs
from fluxmail.audit.postgres_schema import (
    LATEST_VERSION,
    MESSAGES_TABLE,
    MIGRATIONS,
    SELECT,
    migrate,
)
from fluxmail.audit.problems import not_found
from fluxmail.audit.records import AuditRecord, Claim, Claims, DraftClaim, OutboundRecord
from fluxmail.audit.rows import cutoff_epoch, finish_values, list_query, loads, record_from_row
from fluxmail.errors import AuditError
from fluxmail.redaction import redact_words
from fluxmail.results import SendResult

__all__ = ["LATEST_VERSION", "MIGRATIONS", "PostgresStore"]

CONNECT_TIMEOUT = 5  # seconds; a fleet must fail fast, not hang a send
IDLE_CHECK = 30.0  # seconds idle after which the connection is pinged before use
_T = MESSAGES_TABLE
_FINISH = (
    f"UPDATE {_T} SET status=%s, recipients=%s::jsonb, attempts=%s::jsonb, "
    "final_reply=%s::jsonb, duration=%s, sent_at=to_timestamp(%s), updated_at=to_timestamp(%s), "
    "transport=%s, provider_message_id=%s WHERE id=%s"
)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise AuditError(
            "a PostgreSQL audit store (FLUXMAIL_AUDIT_URL) needs psycopg 3: "
            "pip install fluxmail[postgres]",
            code="missing_extra",
        ) from exc
    return psycopg


class PostgresStore(AuditStore):
    """The audit store in one PostgreSQL database; one lazy connection per process."""

    def __init__(
        self, url: str, *, password: str | None = None, stale_after: float = 900.0
    ) -> None:
        self._pg = _psycopg()
        self._url = url
        self._password = password
        self._stale_after = stale_after
        self.location = redact_url(url)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = 0
        self._ready = False  # schema checked and stale records recovered
        self._last_used = 0.0
        self._inherited: list[Any] = []  # connections from before a fork: never touched
        self._outbox: PostgresOutbox | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"

    # --- connection and transactions --------------------------------------------------------

    def _connection(self) -> Any:
        conn = self._conn
        if conn is not None and self._pid != os.getpid():
            # Closing a parent's connection from a child would end the parent's session.
            self._inherited.append(conn)
            conn = self._conn = None
        if conn is not None and (conn.closed or conn.broken):
            conn = self._conn = None
        if conn is not None and time.monotonic() - self._last_used > IDLE_CHECK:
            try:  # the server may have closed an idle connection (Lambda freeze, restart)
                conn.execute("SELECT 1")
            except self._pg.Error:
                self._drop()
                conn = None
        if conn is None:
            conn = self._open()
        return conn

    def _connect(self, name: str) -> Any:
        extra = {"password": self._password} if self._password is not None else {}
        try:
            return self._pg.connect(
                self._url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                application_name=name,
                **extra,
            )
        except self._pg.Error as exc:
            raise self._error(exc) from exc

    def _open(self) -> Any:
        conn = self._connect("fluxmail-audit")
        self._conn, self._pid = conn, os.getpid()
        close_when_dropped(self, conn)
        if not self._ready:
            try:
                migrate(conn, self.location)
                self._ready = True
                self._recover(conn, self._stale_after)
            except BaseException as exc:
                self._drop()
                if isinstance(exc, self._pg.Error):
                    raise self._error(exc) from exc
                raise
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(self._pg.Error):
                self._conn.close()
        self._conn = None

    def _error(self, exc: BaseException) -> AuditError:
        text = redact_words(str(exc), [self._password])
        if isinstance(exc, self._pg.OperationalError):
            return AuditError(
                f"the audit database {self.location} is unavailable ({text}); nothing was sent",
                code="audit_unavailable",
            )
        return AuditError(
            f"the audit database {self.location} cannot be written ({text}); nothing was sent",
            code="audit_unwritable",
        )

    @contextmanager
    def _transaction(self, *, single: bool = False) -> Iterator[Any]:
        """One transaction on the process's connection; failures map to AuditError.

        ``single``: the caller runs one statement, which commits by itself on this autocommit
        connection: no BEGIN and COMMIT round trips (a third of the cost of the outbox
        workers' marks and settlements, which sit on the sending path).
        """
        with self._lock:
            conn = self._connection()
            try:
                block = contextlib.nullcontext() if single else conn.transaction()
                with block, conn.cursor() as cursor:
                    yield cursor
            except self._pg.Error as exc:
                if conn.closed or conn.broken or isinstance(exc, self._pg.OperationalError):
                    self._drop()
                raise self._error(exc) from exc
            finally:
                self._last_used = time.monotonic()

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        from psycopg.rows import dict_row

        with self._transaction() as cursor:
            cursor.row_factory = dict_row
            yield cursor

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
        """Claim every record in one transaction; any error claims none.

        Keys are taken in sorted order so two batches sharing keys cannot deadlock.
        ``defer_snapshots`` changes nothing here: the snapshot is always in the database.
        ``run``: the token of the bulk run (``begin_run``) these claims belong to.
        """
        order = sorted(range(len(records)), key=lambda i: records[i].idempotency_key or "")
        with self._reading() as cursor:
            taken = claim_batch(cursor, [records[i] for i in order], run)
        by_position = dict(zip(order, taken, strict=True))
        return Claims.of(by_position[i] for i in range(len(records)))

    # --- outcomes ---------------------------------------------------------------------------

    def finish(self, audit_id: str, result: SendResult) -> None:
        self.finish_many([(audit_id, result)])

    def finish_many(self, items: Sequence[tuple[str, SendResult]]) -> None:
        """Record outcomes in one transaction; attempts extend those of earlier claims.

        The first-attempt UPDATEs go in one pipeline (psycopg's executemany: one round trip,
        not one a record), in id order so two transactions lock rows in the same order; only
        when some record had earlier attempts (or does not exist) is each one looked at.
        """
        ordered = sorted(items, key=lambda item: item[0])
        now = time.time()
        values = [finish_values(result, [], now, audit_id) for audit_id, result in ordered]
        with self._transaction() as cursor:
            cursor.executemany(_FINISH + " AND base_attempts=0", values)
            if cursor.rowcount == len(values):  # the sum over the pipeline's statements
                return
            for audit_id, result in ordered:
                cursor.execute(
                    f"SELECT attempts, base_attempts FROM {_T} WHERE id=%s FOR UPDATE", (audit_id,)
                )
                row = cursor.fetchone()
                if row is None:
                    raise not_found(audit_id)
                if row[1]:  # a retried record: keep the attempts of the earlier claims
                    prior = list(loads(row[0]))[: row[1]]
                    cursor.execute(_FINISH, finish_values(result, prior, now, audit_id))

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
        sql, args = list_query(SELECT, status, since, limit, mark="%s", epoch="to_timestamp(%s)")
        with self._reading() as cursor:
            rows = cursor.execute(sql, args).fetchall()
        return [record_from_row(r, include_bcc=include_bcc, folder=None) for r in rows]

    def get(self, audit_id: str, *, include_bcc: bool = False) -> AuditRecord:
        with self._reading() as cursor:
            row = cursor.execute(f"{SELECT} WHERE id=%s", (audit_id,)).fetchone()
        if row is None:
            raise not_found(audit_id)
        return record_from_row(row, include_bcc=include_bcc, folder=None)

    def get_eml(self, audit_id: str) -> bytes:
        """The exact bytes sent."""
        with self._transaction() as cursor:
            row = cursor.execute(f"SELECT eml FROM {_T} WHERE id=%s", (audit_id,)).fetchone()
        if row is None:
            raise not_found(audit_id)
        return bytes(row[0])

    # --- drafts (fluxmail.audit.postgres_drafts) ---------------------------------------------

    def save_draft(self, record: OutboundRecord, spec: Mapping[str, Any]) -> str:
        with self._reading() as cursor:
            return postgres_drafts.save_draft(cursor, record, spec)

    def claim_draft(self, audit_id: str) -> DraftClaim:
        with self._reading() as cursor:
            return postgres_drafts.claim_draft(cursor, audit_id)

    def discard_draft(self, audit_id: str) -> None:
        with self._reading() as cursor:
            postgres_drafts.discard_draft(cursor, audit_id)

    def outbox(self) -> PostgresOutbox:
        """The outbox side (fluxmail.audit.postgres_outbox), on this store's connection."""
        with self._lock:
            if self._outbox is None:
                self._outbox = PostgresOutbox(self)
            return self._outbox

    # --- maintenance ------------------------------------------------------------------------

    def prune(self, *, older_than: timedelta | datetime) -> int:
        """Delete records created before the cutoff (except in-flight ``sending`` and the
        outbox's ``pending``: a message still to send is not history)."""
        with self._transaction() as cursor:
            cursor.execute(
                f"DELETE FROM {_T} WHERE created_at<to_timestamp(%s) "
                "AND status NOT IN ('sending', 'pending')",
                (cutoff_epoch(older_than),),
            )
            return int(cursor.rowcount)

    def recover_stale(self, *, older_than: float) -> int:
        """Mark ``sending`` records not updated for ``older_than`` seconds ``unknown``."""
        with self._lock:
            conn = self._connection()  # first use also recovers with stale_after
            try:
                return self._recover(conn, older_than)
            except self._pg.Error as exc:
                self._drop()
                raise self._error(exc) from exc

    def begin_run(self) -> PostgresRun:
        """A bulk run's lease, on a connection of its own (fluxmail.audit.postgres_runs)."""
        with self._lock:
            self._connection()  # the schema is ready and dead runs are resolved
        lease = self._connect("fluxmail-audit-run")
        try:
            return PostgresRun(self, lease, new_id())
        except self._pg.Error as exc:
            with suppress(self._pg.Error):
                lease.close()
            raise self._error(exc) from exc

    def recover_runs(self) -> int:
        """Resolve the records of every run whose process died; how many records."""
        with self._lock:
            conn = self._connection()
            try:
                return recover_runs(conn)
            except self._pg.Error as exc:
                self._drop()
                raise self._error(exc) from exc

    def _recover(self, conn: Any, older_than: float) -> int:
        """Dead runs first (their never-sent records must not turn 'unknown'), then the stale.
        Rows under an outbox lease are the lease's to resolve (expire_leases), not the clock's."""
        recover_runs(conn)
        now = time.time()
        cursor = conn.execute(
            f"UPDATE {_T} SET status='unknown', updated_at=to_timestamp(%s) "
            "WHERE status='sending' AND lease_owner IS NULL AND updated_at<to_timestamp(%s)",
            (now, now - older_than),
        )
        return int(cursor.rowcount)

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._drop()
            self._conn = None


def redact_url(url: str) -> str:
    """A database URL with any password removed (for ``location``, reprs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid database URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = "&".join(
        p for p in parts.query.split("&") if p and not p.lower().startswith("password=")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
