"""The PostgreSQL audit store: one audit trail and one idempotency guarantee for a fleet.

Same behaviour as the SQLite store; the snapshot (message.eml bytes, bodies, attachment
copies) lives in the database (bytea/text) so every instance can read every record.
Idempotency rests on a UNIQUE key: ``INSERT ... ON CONFLICT DO NOTHING`` then
``SELECT ... FOR UPDATE``, committed before claim() returns. psycopg 3 is imported lazily
and no connection is opened before the first call (Lambda cold starts stay cheap).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import Any

from fluxmail.audit.postgres_runs import (
    MESSAGES_TABLE,
    RUNS_TABLE,
    PostgresRun,
    recover_runs,
    resolve_run,
)
from fluxmail.audit.store import (
    AuditRecord,
    Claim,
    OutboundRecord,
    cutoff_epoch,
    dumps,
    existing_claim,
    finish_values,
    list_query,
    loads,
    new_id,
    newer_schema,
    not_found,
    record_from_row,
    redact_url,
)
from fluxmail.errors import AuditError
from fluxmail.redaction import redact_words
from fluxmail.results import SendResult

__all__ = ["LATEST_VERSION", "MIGRATIONS", "PostgresStore"]

CONNECT_TIMEOUT = 5  # seconds; a fleet must fail fast, not hang a send
IDLE_CHECK = 30.0  # seconds idle after which the connection is pinged before use
_LOCK_ID = 0x666C7578  # pg_advisory_xact_lock key for migrations ("flux")
_T = MESSAGES_TABLE
_A = "fluxmail_audit_attachments"
_R = RUNS_TABLE

# Forward migrations, applied in order under an advisory lock. Append, never edit.
MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (
        1,
        (
            f"""CREATE TABLE {_T} (
                id text PRIMARY KEY,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                sent_at timestamptz,
                status text NOT NULL,
                backend text NOT NULL,
                provider text,
                host text,
                sender text NOT NULL,
                to_addrs jsonb NOT NULL,
                cc_addrs jsonb NOT NULL,
                bcc_addrs jsonb NOT NULL,
                subject text NOT NULL,
                message_id text NOT NULL,
                idempotency_key text UNIQUE,
                content_hash text NOT NULL,
                recipients jsonb NOT NULL DEFAULT '{{}}',
                attempts jsonb NOT NULL DEFAULT '[]',
                base_attempts integer NOT NULL DEFAULT 0,
                final_reply jsonb,
                duration double precision,
                metadata jsonb NOT NULL DEFAULT '{{}}',
                attachments jsonb NOT NULL DEFAULT '[]',
                eml bytea NOT NULL,
                body_text text,
                body_html text
            )""",
            f"CREATE INDEX {_T}_status ON {_T} (status, updated_at)",
            f"CREATE INDEX {_T}_created ON {_T} (created_at)",
            f"""CREATE TABLE {_A} (
                audit_id text NOT NULL REFERENCES {_T}(id) ON DELETE CASCADE,
                position integer NOT NULL,
                content bytea NOT NULL,
                PRIMARY KEY (audit_id, position)
            )""",
        ),
    ),
    # 2: bulk-run leases; a record's run and when it was handed to the wire (RunLease).
    (
        2,
        (
            f"ALTER TABLE {_T} ADD COLUMN run_id text, ADD COLUMN on_wire_at timestamptz",
            f"CREATE INDEX {_T}_run ON {_T} (run_id) WHERE status = 'sending'",
            f"""CREATE TABLE {_R} (
                token text PRIMARY KEY,
                lock_key integer NOT NULL,
                started_at timestamptz NOT NULL DEFAULT now()
            )""",
        ),
    ),
]
LATEST_VERSION = MIGRATIONS[-1][0]

_COLUMNS = (
    "id, created_at, updated_at, sent_at, status, backend, provider, host, sender, to_addrs, "
    "cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, recipients, "
    "attempts, base_attempts, final_reply, duration, metadata, attachments, run_id"
)
_SELECT = f"SELECT {_COLUMNS} FROM {_T}"
_INSERT = (
    f"INSERT INTO {_T} (id, created_at, updated_at, status, backend, provider, host, sender, "
    "to_addrs, cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, "
    "metadata, attachments, eml, body_text, body_html, run_id) VALUES (%s, to_timestamp(%s), "
    "to_timestamp(%s), %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s, %s, %s, "
    "%s::jsonb, %s::jsonb, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)
_RETRY = (
    f"UPDATE {_T} SET status=%s, updated_at=to_timestamp(%s), sent_at=NULL, message_id=%s, "
    "attachments=%s::jsonb, eml=%s, body_text=%s, body_html=%s, run_id=%s, on_wire_at=NULL, "
    "base_attempts=jsonb_array_length(attempts) WHERE id=%s"
)
_FINISH = (
    f"UPDATE {_T} SET status=%s, recipients=%s::jsonb, attempts=%s::jsonb, "
    "final_reply=%s::jsonb, duration=%s, sent_at=to_timestamp(%s), updated_at=to_timestamp(%s) "
    "WHERE id=%s"
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


class PostgresStore:
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
        # A mailer dropped without close() must not leak its connection (or warn about it).
        weakref.finalize(self, _close_if_owner, conn, self._pid)
        if not self._ready:
            try:
                self._migrate(conn)
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
    def _transaction(self) -> Iterator[Any]:
        """One transaction on the process's connection; failures map to AuditError."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cursor:
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

    def _migrate(self, conn: Any) -> None:
        """Bring the schema to LATEST_VERSION; the advisory lock serializes starting instances."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS fluxmail_audit_schema "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM fluxmail_audit_schema")
            current = row.fetchone()[0]
            if current > LATEST_VERSION:
                raise newer_schema(self.location, current, LATEST_VERSION)
            for version, steps in MIGRATIONS:
                if version > current:
                    for sql in steps:
                        conn.execute(sql)
                    conn.execute(
                        "INSERT INTO fluxmail_audit_schema (version) VALUES (%s)", (version,)
                    )

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
        """Claim every record in one transaction; any error claims none.

        Keys are taken in sorted order so two batches sharing keys cannot deadlock.
        ``defer_snapshots`` changes nothing here: the snapshot is always in the database.
        ``run``: the token of the bulk run (``begin_run``) these claims belong to.
        """
        order = sorted(range(len(records)), key=lambda i: records[i].idempotency_key or "")
        claims: list[Claim | None] = [None] * len(records)
        with self._reading() as cursor:
            for i in order:
                claims[i] = self._claim_one(cursor, records[i], run)
        return [c for c in claims if c is not None]

    def _claim_one(self, cursor: Any, record: OutboundRecord, run: str | None) -> Claim:
        now = time.time()
        audit_id = new_id(now)
        manifest = [
            {k: v for k, v in item.items() if k != "stored_as"} for item in _manifest(record)
        ]
        cursor.execute(
            _INSERT,
            (
                audit_id, now, now, record.status, record.backend, record.provider, record.host,
                record.sender, dumps(record.to), dumps(record.cc), dumps(record.bcc),
                record.subject, record.message_id, record.idempotency_key, record.content_hash,
                dumps(dict(record.metadata)), dumps(manifest), record.eml, record.text,
                record.html, run,
            ),
        )  # fmt: skip
        if cursor.fetchone() is not None:
            self._store_attachments(cursor, audit_id, record, replace=False)
            return Claim(audit_id)
        cursor.execute(f"{_SELECT} WHERE idempotency_key=%s FOR UPDATE", (record.idempotency_key,))
        row = cursor.fetchone()
        if row["status"] == "sending" and row["run_id"] and resolve_run(cursor, row["run_id"]):
            # Its run had died while this store was open: read what the recovery made of it.
            cursor.execute(f"{_SELECT} WHERE id=%s", (row["id"],))
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
        self._store_attachments(cursor, row["id"], record, replace=True)
        return Claim(row["id"])

    def _store_attachments(
        self, cursor: Any, audit_id: str, record: OutboundRecord, *, replace: bool
    ) -> None:
        if replace:
            cursor.execute(f"DELETE FROM {_A} WHERE audit_id=%s", (audit_id,))
        if record.attachments:
            cursor.executemany(
                f"INSERT INTO {_A} (audit_id, position, content) VALUES (%s, %s, %s)",
                [(audit_id, n, content) for n, (_, _, content) in enumerate(record.attachments)],
            )

    # --- outcomes ---------------------------------------------------------------------------

    def finish(self, audit_id: str, result: SendResult) -> None:
        self.finish_many([(audit_id, result)])

    def finish_many(self, items: Sequence[tuple[str, SendResult]]) -> None:
        """Record outcomes in one transaction; attempts extend those of earlier claims."""
        with self._transaction() as cursor:
            for audit_id, result in sorted(items, key=lambda item: item[0]):
                now = time.time()
                cursor.execute(
                    _FINISH + " AND base_attempts=0", finish_values(result, [], now, audit_id)
                )
                if cursor.rowcount:
                    continue
                cursor.execute(
                    f"SELECT attempts, base_attempts FROM {_T} WHERE id=%s FOR UPDATE", (audit_id,)
                )
                row = cursor.fetchone()
                if row is None:
                    raise not_found(audit_id)
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
        sql, args = list_query(_SELECT, status, since, limit, mark="%s", epoch="to_timestamp(%s)")
        with self._reading() as cursor:
            rows = cursor.execute(sql, args).fetchall()
        return [record_from_row(r, include_bcc=include_bcc, folder=None) for r in rows]

    def get(self, audit_id: str, *, include_bcc: bool = False) -> AuditRecord:
        with self._reading() as cursor:
            row = cursor.execute(f"{_SELECT} WHERE id=%s", (audit_id,)).fetchone()
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

    # --- maintenance ------------------------------------------------------------------------

    def prune(self, *, older_than: timedelta | datetime) -> int:
        """Delete records created before the cutoff (except in-flight ``sending``)."""
        with self._transaction() as cursor:
            cursor.execute(
                f"DELETE FROM {_T} WHERE created_at<to_timestamp(%s) AND status<>'sending'",
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
        """Dead runs first (their never-sent records must not turn 'unknown'), then the stale."""
        recover_runs(conn)
        now = time.time()
        cursor = conn.execute(
            f"UPDATE {_T} SET status='unknown', updated_at=to_timestamp(%s) "
            "WHERE status='sending' AND updated_at<to_timestamp(%s)",
            (now, now - older_than),
        )
        return int(cursor.rowcount)

    def materialize_pending(self) -> int:
        """Nothing is ever pending: snapshots are written with the claim."""
        return 0

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._drop()
            self._conn = None


def _close_if_owner(conn: Any, pid: int) -> None:
    if os.getpid() == pid:  # never from a forked child: it would end the parent's session
        with suppress(Exception):
            conn.close()


def _manifest(record: OutboundRecord) -> list[dict[str, Any]]:
    from fluxmail.audit.snapshots import write_attachments

    return write_attachments(None, record.attachments)
