"""The SQLite store's outbox (fluxmail.audit.outbox): one machine, any number of processes.

Every write is one ``BEGIN IMMEDIATE`` transaction (the store's ``_transaction``): SQLite's
writer lock is shared by every process using the folder, so a claim is exclusive without
``SKIP LOCKED``. Enqueued rows are claimed as bulk runs claim (same idempotency; the snapshot
committed in ``pending_snapshots`` with the row, fluxmail.audit.deferred): no file is written
while enqueueing, and a worker in any process reads the exact bytes from the database. The
snapshot goes to its folder once the row has ended. A commit survives a process kill (WAL):
``mark`` is durable before the first byte goes out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from fluxmail.audit import sqlite_outbox_rows as sql
from fluxmail.audit.deferred import INSERT_PENDING
from fluxmail.audit.outbox import Delivery, OutboxStats, Queued, Settlement
from fluxmail.audit.problems import not_found
from fluxmail.audit.rows import dumps, dumps_strings, finish_values
from fluxmail.audit.runs import DeadRun
from fluxmail.audit.snapshots import remove_snapshot
from fluxmail.audit.sqlite_claims import claim_batch
from fluxmail.errors import AuditError, ConfigurationError

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path

    from fluxmail.audit.deferred import Materializer

__all__ = ["SQLiteOutbox", "SQLiteWaiter"]

_TICK = 0.2  # seconds between a waiter's checks for due work
_RETRYABLE = frozenset({"failed", "cancelled"})


class _Store(Protocol):
    """What the outbox uses of SQLiteStore (its connection, lock and folder)."""

    folder: Path
    _root: str
    _snapshots: Materializer

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...
    def _reading(self) -> AbstractContextManager[sqlite3.Cursor]: ...


def _refuse(connection: Any) -> None:
    if connection is not None:
        raise ConfigurationError(
            "the SQLite audit store cannot join your transaction; use a PostgreSQL audit "
            "store (FLUXMAIL_AUDIT_URL)",
            code="outbox_connection_unsupported",
        )


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SQLiteOutbox:
    """The outbox side of one SQLiteStore (``store.outbox()``)."""

    def __init__(self, store: _Store) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"SQLiteOutbox({self._store._root!r})"

    # --- enqueue ----------------------------------------------------------------------------

    def enqueue_many(self, items: Sequence[Queued], *, connection: Any = None) -> list[str]:
        """Store the rows as ``pending`` in one transaction; their ids in order."""
        _refuse(connection)
        if not items:
            return []
        # OutboundRecord's status Literal predates the outbox: "pending" rides through it.
        pending: Any = "pending"
        records = [
            q.record if str(q.record.status) == pending else replace(q.record, status=pending)
            for q in items
        ]
        created: list[str] = []
        snapshots: list[tuple[Any, ...]] = []
        dead: list[DeadRun] = []
        root = self._store._root
        try:
            with self._store._transaction() as conn:
                claims = claim_batch(conn, root, records, created, snapshots, None, dead)
                conn.executemany(INSERT_PENDING, snapshots)
                queued = [
                    (q.due_at, q.deadline_at, dumps(dict(q.spec)), c.audit_id)
                    for q, c in zip(items, claims, strict=True)
                    if c.replay is None
                ]
                conn.executemany(sql.QUEUE, queued)
        except BaseException:
            for rel in created:
                remove_snapshot(self._store.folder, rel)
            for journal in dead:
                journal.release(resolved=False)
            raise
        for journal in dead:
            journal.release(resolved=True)
        return [c.audit_id for c in claims]

    async def enqueue_many_async(
        self, items: Sequence[Queued], *, connection: Any = None
    ) -> list[str]:
        """``enqueue_many`` on a worker thread (SQLite has no asynchronous driver)."""
        import asyncio

        _refuse(connection)
        return await asyncio.to_thread(self.enqueue_many, items)

    # --- leases -----------------------------------------------------------------------------

    def claim_due(
        self, owner: str, *, limit: int, lease: float, ids: Sequence[str] | None = None
    ) -> list[Delivery]:
        """Up to ``limit`` due rows, now ``sending`` under ``owner``'s lease."""
        with self._store._transaction() as conn:
            now = time.time()
            sql.expire(conn, now)
            rows = sql.due_rows(conn, now, limit, ids)
            if not rows:
                return []
            conn.executemany(sql.CLAIM, [(owner, now + lease, now, r[0]) for r in rows])
            found = sql.snapshots(conn, [r[0] for r in rows])
        # The rows are ours now: their files can be read outside the writer lock.
        out, unreadable = sql.deliveries(self._store._root, rows, found)
        if unreadable:
            with self._store._transaction() as conn:
                sql.unreadable_failed(conn, unreadable, time.time())
        return out

    def renew(self, owner: str, *, lease: float) -> int:
        with self._store._transaction() as conn:
            return conn.execute(sql.RENEW, (time.time() + lease, owner)).rowcount

    def mark(
        self, owner: str, audit_ids: Sequence[str], *, settle: Sequence[Settlement] = ()
    ) -> frozenset[str]:
        """Note the rows as on the wire (committed before this returns); the refused ids.
        ``settle`` is committed first (a commit here is cheap: no round trip to save)."""
        self.settle(owner, settle)
        if not audit_ids:
            return frozenset()
        with self._store._transaction() as conn:
            now = time.time()
            wanted = (dumps_strings(list(audit_ids)), owner, now)
            marked = [row[0] for row in conn.execute(sql.MARKABLE, wanted)]
            if marked:
                conn.execute(sql.MARK, (now, dumps_strings(marked)))
        return frozenset(audit_ids).difference(marked)

    def settle(self, owner: str, items: Sequence[Settlement]) -> None:
        """Outcomes (or a new due time) of rows ``owner`` holds or held while marked."""
        if not items:
            return
        now = time.time()
        final: list[tuple[Any, ...]] = []
        again: list[tuple[Any, ...]] = []
        for item in items:
            values = finish_values(item.result, (), now, item.audit_id)
            if item.retry_at is None:
                final.append((*values, owner))
                continue
            retry = item.retry_recipients
            # (recipients, attempts, final_reply, duration, updated_at, transport, provider id)
            again.append(
                (*values[1:5], now, *values[7:9], item.retry_at,
                 dumps_strings(list(retry)) if retry is not None else None, item.audit_id, owner)
            )  # fmt: skip
        with self._store._transaction() as conn:
            if final:
                conn.executemany(sql.SETTLE_FINAL, final)
            if again:
                conn.executemany(sql.SETTLE_RETRY, again)
        if final:  # their snapshots may go to their folders now
            self._store._snapshots.wake()

    def release(self, owner: str, audit_ids: Sequence[str]) -> None:
        if not audit_ids:
            return
        with self._store._transaction() as conn:
            conn.execute(sql.RELEASE, (time.time(), dumps_strings(list(audit_ids)), owner))

    def expire_leases(self) -> int:
        with self._store._transaction() as conn:
            return sql.expire(conn, time.time())

    # --- reading ----------------------------------------------------------------------------

    def next_due(self) -> float | None:
        with self._store._reading() as cursor:
            row = cursor.execute(
                "SELECT MIN(due_at) AS due FROM messages WHERE status='pending'"
            ).fetchone()
        return None if row is None or row["due"] is None else float(row["due"])

    def stats(self) -> OutboxStats:
        now = time.time()
        with self._store._reading() as cursor:
            cursor.row_factory = None
            row = cursor.execute(sql.STATS, {"now": now}).fetchone()
        pending, due, scheduled, retrying, sending, failed, unknown, cancelled = (
            int(v or 0) for v in row[:8]
        )
        return OutboxStats(
            pending=pending, due=due, scheduled=scheduled, retrying=retrying, sending=sending,
            failed=failed, unknown=unknown, cancelled=cancelled,
            oldest_due_age=None if row[8] is None else max(0.0, now - float(row[8])),
        )  # fmt: skip

    # --- operators --------------------------------------------------------------------------

    def retry(self, audit_id: str, *, deadline_at: float, force: bool = False) -> None:
        """A failed or cancelled row (unknown only with ``force``) pending again, due now."""
        with self._store._transaction() as conn:
            status, spec = self._row(conn, audit_id)
            allowed = _RETRYABLE | ({"unknown"} if force else set())
            if spec is None or status not in allowed:
                why = "it was not queued (sent inline, or a draft)" if spec is None else status
                hint = " (it may have been delivered: --force retries it anyway)"
                raise AuditError(
                    f"audit record {audit_id!r} cannot be retried: {why}"
                    + (hint if status == "unknown" and spec is not None else ""),
                    code="outbox_not_retryable",
                )
            now = time.time()
            conn.execute(
                "UPDATE messages SET status='pending', due_at=?, deadline_at=?, sent_at=NULL, "
                "lease_owner=NULL, lease_until=NULL, on_wire_at=NULL, retry_recipients=NULL, "
                "updated_at=? WHERE id=?",
                (now, deadline_at, now, audit_id),
            )

    def cancel(self, audit_id: str) -> None:
        """A ``pending`` row ``cancelled``: never sent."""
        with self._store._transaction() as conn:
            status, _ = self._row(conn, audit_id)
            if status != "pending":
                raise AuditError(
                    f"audit record {audit_id!r} cannot be cancelled: it is {status}, not pending",
                    code="outbox_not_cancellable",
                )
            conn.execute(
                "UPDATE messages SET status='cancelled', updated_at=? WHERE id=?",
                (time.time(), audit_id),
            )

    @staticmethod
    def _row(conn: sqlite3.Connection, audit_id: str) -> tuple[str, str | None]:
        # A draft keeps its model too, but no due time: it is not the outbox's to send.
        row = conn.execute(
            "SELECT status, CASE WHEN due_at IS NULL THEN NULL ELSE spec END FROM messages "
            "WHERE id=?",
            (audit_id,),
        ).fetchone()
        if row is None:
            raise not_found(audit_id)
        return row[0], row[1]

    # --- pacing and waking ------------------------------------------------------------------

    def reserve(self, key: str, rate: float, count: int) -> float:
        """GCRA: the key's next free slot moves ``count / rate`` on; the wait for the first."""
        if rate <= 0:
            raise ConfigurationError(f"rate must be positive, not {rate!r}")
        step = max(0, count) / rate
        with self._store._transaction() as conn:
            now = time.time()
            row = conn.execute(
                "SELECT next_at FROM fluxmail_outbox_rates WHERE key=?", (key,)
            ).fetchone()
            start = max(row[0], now) if row is not None else now
            conn.execute(
                "INSERT OR REPLACE INTO fluxmail_outbox_rates (key, next_at) VALUES (?, ?)",
                (key, start + step),
            )
        return max(0.0, start - now)

    def waiter(self) -> SQLiteWaiter:
        return SQLiteWaiter(self._store)


class SQLiteWaiter:
    """Wakes an idle worker when a pending row is due: a cheap indexed check every 0.2 s
    (SQLite has no notifications across processes)."""

    def __init__(self, store: _Store) -> None:
        self._store = store
        self._closed = threading.Event()

    def wait(self, timeout: float) -> bool:
        """True as soon as due work is there, False after ``timeout`` seconds (or on close)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._closed.is_set():
            if self._due():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._closed.wait(min(_TICK, left))
        return False

    def _due(self) -> bool:
        with self._store._reading() as cursor:
            row = cursor.execute(
                "SELECT 1 AS due FROM messages WHERE status='pending' AND due_at<=? LIMIT 1",
                (time.time(),),
            ).fetchone()
        return row is not None

    def close(self) -> None:
        self._closed.set()
