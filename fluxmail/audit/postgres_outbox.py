"""The PostgreSQL outbox (fluxmail.audit.outbox): the audit record is the queue row.

Built on the store's connection and transactions; statements live in
``postgres_outbox_enqueue`` (writing rows, also in the caller's own transaction) and
``postgres_outbox_leases`` (claiming and settling). Workers take due rows with
``FOR UPDATE SKIP LOCKED`` and wake on ``LISTEN fluxmail_outbox`` (``PostgresWaiter``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from fluxmail.audit.outbox import Delivery, OutboxStats, Queued, Settlement
from fluxmail.audit.postgres_outbox_enqueue import CHANNEL, plan_enqueue, run_async, run_sync
from fluxmail.audit.postgres_outbox_leases import (
    claim,
    expire,
    mark_settling,
    settle,
    settles_in_one,
)
from fluxmail.audit.postgres_schema import MESSAGES_TABLE, RATES_TABLE
from fluxmail.audit.problems import not_found
from fluxmail.errors import AuditError, ConfigurationError

__all__ = ["PostgresOutbox", "PostgresWaiter"]

_T = MESSAGES_TABLE
_RENEW = (
    f"UPDATE {_T} SET lease_until=now() + make_interval(secs => %s) "
    "WHERE lease_owner=%s AND status='sending'"
)
_RELEASE = (
    f"UPDATE {_T} SET status='pending', lease_owner=NULL, lease_until=NULL, "
    "tries=GREATEST(tries-1, 0), updated_at=now() WHERE id = ANY(%s) AND lease_owner=%s "
    "AND status='sending' AND on_wire_at IS NULL"
)
_NEXT_DUE = f"SELECT extract(epoch from min(due_at))::float8 FROM {_T} WHERE status='pending'"
# Counts of outbox rows (a stored model and a due time); inline sends and drafts are not
# the queue's.
_STATS = (
    "SELECT count(*) FILTER (WHERE status='pending'), "
    "count(*) FILTER (WHERE status='pending' AND due_at <= now()), "
    "count(*) FILTER (WHERE status='pending' AND due_at > now()), "
    "count(*) FILTER (WHERE status='pending' AND tries > 0), "
    "count(*) FILTER (WHERE status='sending'), count(*) FILTER (WHERE status='failed'), "
    "count(*) FILTER (WHERE status='unknown'), count(*) FILTER (WHERE status='cancelled'), "
    "extract(epoch from now() - min(due_at) FILTER (WHERE status='pending' "
    f"AND due_at <= now()))::float8 FROM {_T} WHERE spec IS NOT NULL AND due_at IS NOT NULL"
)
_RETRY = (
    f"UPDATE {_T} SET status='pending', due_at=now(), deadline_at=to_timestamp(%s), tries=0, "
    "lease_owner=NULL, lease_until=NULL, on_wire_at=NULL, sent_at=NULL, run_id=NULL, "
    "updated_at=now() WHERE id=%s"
)
_CANCEL = (
    f"UPDATE {_T} SET status='cancelled', lease_owner=NULL, lease_until=NULL, updated_at=now() "
    "WHERE id=%s AND status='pending' RETURNING id"
)
# A generic cell rate algorithm: the row holds when the next slot is free (epoch seconds).
_RESERVE = (
    "WITH clock AS (SELECT extract(epoch from clock_timestamp())::float8 AS now) "
    f"INSERT INTO {RATES_TABLE} AS r (key, next_at) SELECT %s, now + %s FROM clock "
    "ON CONFLICT (key) DO UPDATE SET next_at = GREATEST(r.next_at + %s, EXCLUDED.next_at) "
    "RETURNING GREATEST(r.next_at - %s - (SELECT now FROM clock), 0)"
)


class PostgresOutbox:
    """The outbox side of a PostgresStore; every method is one transaction."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"PostgresOutbox({self._store.location!r})"

    # --- enqueueing -------------------------------------------------------------------------

    def _migrated(self) -> None:
        """The schema is current before anything is written on a caller's connection."""
        with self._store._lock:
            self._store._connection()

    def enqueue_many(self, items: Sequence[Queued], *, connection: Any = None) -> list[str]:
        if connection is None:
            with self._store._transaction() as cursor:
                return run_sync(cursor, plan_enqueue(items))
        conn = self._caller_connection(connection)
        self._migrated()
        from psycopg.rows import tuple_row

        pg = self._store._pg
        try:
            if _idle_in_transaction_mode(conn, pg):
                conn.execute("SELECT 1")  # opens the caller's transaction: see below
            # A savepoint in the caller's open transaction (a transaction in autocommit):
            # committed, or rolled back, with the caller's own change.
            with conn.transaction(), conn.cursor(row_factory=tuple_row) as cursor:
                return run_sync(cursor, plan_enqueue(items))
        except pg.Error as exc:
            raise self._store._error(exc) from exc

    async def enqueue_many_async(
        self, items: Sequence[Queued], *, connection: Any = None
    ) -> list[str]:
        if connection is None:
            return await asyncio.to_thread(self.enqueue_many, items)
        conn = self._caller_async_connection(connection)
        await asyncio.to_thread(self._migrated)
        from psycopg.rows import tuple_row

        pg = self._store._pg
        try:
            if _idle_in_transaction_mode(conn, pg):
                await conn.execute("SELECT 1")
            async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cursor:
                return await run_async(cursor, plan_enqueue(items))
        except pg.Error as exc:
            raise self._store._error(exc) from exc

    def _caller_connection(self, connection: Any) -> Any:
        """A psycopg Connection, or the one under a SQLAlchemy Connection (duck-typed)."""
        pg = self._store._pg
        if isinstance(connection, pg.Connection):
            return connection
        driver = getattr(getattr(connection, "connection", None), "driver_connection", None)
        if isinstance(driver, pg.Connection):
            if not connection.in_transaction():
                # Written under SQLAlchemy's feet: its commit() must know there is one to end.
                connection.begin()
            return driver
        raise _unsupported(connection, "a psycopg 3 Connection or a SQLAlchemy Connection")

    def _caller_async_connection(self, connection: Any) -> Any:
        if isinstance(connection, self._store._pg.AsyncConnection):
            return connection
        raise _unsupported(connection, "a psycopg 3 AsyncConnection")

    # --- leases -----------------------------------------------------------------------------

    def claim_due(
        self, owner: str, *, limit: int, lease: float, ids: Sequence[str] | None = None
    ) -> list[Delivery]:
        self.expire_leases()
        with self._store._transaction() as cursor:
            return claim(cursor, owner, limit, lease, ids)

    def renew(self, owner: str, *, lease: float) -> int:
        with self._store._transaction() as cursor:
            cursor.execute(_RENEW, (lease, owner))
            return int(cursor.rowcount)

    def mark(
        self, owner: str, audit_ids: Sequence[str], *, settle: Sequence[Settlement] = ()
    ) -> frozenset[str]:
        finals = [item for item in settle if item.retry_at is None]
        later = [item for item in settle if item.retry_at is not None]
        if later:
            self.settle(owner, later)
        with self._store._transaction(single=True) as cursor:
            marked = mark_settling(cursor, owner, audit_ids, finals)
        return frozenset(audit_ids) - marked

    def settle(self, owner: str, items: Sequence[Settlement]) -> None:
        if items:
            with self._store._transaction(single=settles_in_one(items)) as cursor:
                settle(cursor, owner, items)

    def release(self, owner: str, audit_ids: Sequence[str]) -> None:
        if audit_ids:
            with self._store._transaction(single=True) as cursor:
                cursor.execute(_RELEASE, (list(audit_ids), owner))

    def expire_leases(self) -> int:
        with self._store._transaction() as cursor:
            return expire(cursor)

    # --- operations -------------------------------------------------------------------------

    def next_due(self) -> float | None:
        with self._store._transaction() as cursor:
            value = cursor.execute(_NEXT_DUE).fetchone()[0]
        return float(value) if value is not None else None

    def stats(self) -> OutboxStats:
        with self._store._transaction() as cursor:
            row = cursor.execute(_STATS).fetchone()
        pending, due, scheduled, retrying, sending, failed, unknown, cancelled, age = row
        return OutboxStats(
            pending, due, scheduled, retrying, sending, failed, unknown, cancelled, _age(age)
        )

    def retry(self, audit_id: str, *, deadline_at: float, force: bool = False) -> None:
        with self._store._transaction() as cursor:
            cursor.execute(f"SELECT status, spec IS NOT NULL AND due_at IS NOT NULL FROM {_T} "
                           "WHERE id=%s FOR UPDATE",
                           (audit_id,))  # fmt: skip
            row = cursor.fetchone()
            if row is None:
                raise not_found(audit_id)
            status, queued = row
            allowed = {"failed", "cancelled"} | ({"unknown"} if force else set())
            if not queued or status not in allowed:
                raise _not_retryable(audit_id, status, queued)
            cursor.execute(_RETRY, (deadline_at, audit_id))

    def cancel(self, audit_id: str) -> None:
        with self._store._transaction() as cursor:
            if cursor.execute(_CANCEL, (audit_id,)).fetchone() is not None:
                return
            row = cursor.execute(f"SELECT status FROM {_T} WHERE id=%s", (audit_id,)).fetchone()
        if row is None:
            raise not_found(audit_id)
        raise AuditError(
            f"audit record {audit_id!r} is {row[0]}, not pending: only a message still waiting "
            "for a worker can be cancelled",
            code="outbox_not_cancellable",
        )

    def reserve(self, key: str, rate: float, count: int) -> float:
        step = max(0, count) / rate
        with self._store._transaction() as cursor:
            wait = cursor.execute(_RESERVE, (key, step, step, step)).fetchone()[0]
        return float(wait)

    def waiter(self) -> PostgresWaiter:
        return PostgresWaiter(self._store)


def _idle_in_transaction_mode(conn: Any, pg: Any) -> bool:
    """No transaction open yet on a connection that is not autocommit: psycopg's
    ``transaction()`` would then BEGIN and COMMIT one of its own, committing for the caller."""
    idle = conn.info.transaction_status == pg.pq.TransactionStatus.IDLE
    return not conn.autocommit and bool(idle)


def _age(value: Any) -> float | None:
    return max(0.0, float(value)) if value is not None else None


def _unsupported(connection: Any, wanted: str) -> ConfigurationError:
    kind = type(connection)
    return ConfigurationError(
        f"enqueue(connection=...) takes {wanted}, not {kind.__module__}.{kind.__qualname__}; "
        "nothing was written",
        code="outbox_connection_unsupported",
    )


def _not_retryable(audit_id: str, status: str, queued: bool) -> AuditError:
    if not queued:
        why = "was not queued (sent inline, or a draft): the outbox has nothing to send again"
    elif status == "unknown":
        why = "is unknown: it may have been delivered; retry with force to send it anyway"
    else:
        why = f"is {status}: only a failed or cancelled message can be queued again"
    return AuditError(f"audit record {audit_id!r} {why}", code="outbox_not_retryable")


class PostgresWaiter:
    """``LISTEN fluxmail_outbox`` on a connection of its own (autocommit)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._conn = store._connect("fluxmail-outbox-listen")
        try:
            self._conn.execute(f"LISTEN {CHANNEL}")
        except store._pg.Error as exc:
            self.close()
            raise self._unavailable(exc) from exc

    def wait(self, timeout: float) -> bool:
        """True when an enqueue was announced within ``timeout`` seconds."""
        try:
            woken = any(True for _ in self._conn.notifies(timeout=timeout, stop_after=1))
            if woken:  # the rest of a burst wakes nobody twice
                for _ in self._conn.notifies(timeout=0):
                    pass
        except self._store._pg.Error as exc:
            raise self._unavailable(exc) from exc
        return woken

    def _unavailable(self, exc: BaseException) -> AuditError:
        error = self._store._error(exc)
        # Any failure here is a lost session: the worker reconnects (a new waiter).
        return AuditError(str(error), code="audit_unavailable")

    def close(self) -> None:
        with suppress(Exception):
            self._conn.close()
