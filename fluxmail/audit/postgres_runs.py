"""Bulk-run leases for the PostgreSQL store (fleets: the lease must be visible to every host).

A run's lease is a session-level advisory lock (``pg_try_advisory_lock``) held by a connection
of its own for the life of the run: the server drops it when that session ends, which it does
when the process dies, on whatever machine. The run is listed in ``fluxmail_audit_runs`` with
its lock key; each record handed to the wire gets ``on_wire_at`` set, committed before its
bytes go out. Recovery takes a listed run's lock (``pg_try_advisory_xact_lock``: only when no
session holds it) and resolves its records still ``sending``: ``on_wire_at`` set -> ``unknown``,
else ``failed`` with recipients ``deferred``.

If the lease's session is lost while the run lives (a network cut), a recovery may resolve the
run's records; marking only touches records still ``sending`` for this run, so the run does not
send a record taken from it (``mark`` returns it as refused).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from fluxmail.audit.postgres_schema import MESSAGES_TABLE, RUNS_TABLE
from fluxmail.audit.rows import never_sent_recipients
from fluxmail.errors import AuditError

__all__ = ["PostgresRun", "recover_runs", "resolve_run"]

_LOCKS = 0x666C7578  # first key of the (int, int) advisory locks of run leases ("flux")
_T, _R = MESSAGES_TABLE, RUNS_TABLE

_MARK = (
    f"UPDATE {_T} SET on_wire_at=now() WHERE id = ANY(%s) AND run_id=%s AND status='sending' "
    "RETURNING id"
)
_RUN_UNKNOWN = (
    f"UPDATE {_T} SET status='unknown', updated_at=now() "
    "WHERE run_id=%s AND status='sending' AND on_wire_at IS NOT NULL"
)
_RUN_SENDING = (
    f"SELECT id, to_addrs, cc_addrs, bcc_addrs FROM {_T} "
    "WHERE run_id=%s AND status='sending' FOR UPDATE"
)
_RUN_NEVER_SENT = (
    f"UPDATE {_T} SET status='failed', recipients=%s::jsonb, final_reply=NULL, sent_at=NULL, "
    "updated_at=now() WHERE id=%s"
)


def resolve_run(cursor: Any, token: str) -> int:
    """In the cursor's transaction: if the run's owner is gone, resolve its 'sending' records
    and forget the run; how many records (0 also when the run is alive or unknown)."""
    cursor.execute(f"SELECT lock_key FROM {_R} WHERE token=%s", (token,))
    row = cursor.fetchone()
    if row is None:
        return 0
    key = row["lock_key"] if isinstance(row, dict) else row[0]
    cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", (_LOCKS, key))
    got = cursor.fetchone()
    if not (got["pg_try_advisory_xact_lock"] if isinstance(got, dict) else got[0]):
        return 0  # its session still holds the lease: the run is alive
    cursor.execute(_RUN_UNKNOWN, (token,))
    count = int(cursor.rowcount)
    cursor.execute(_RUN_SENDING, (token,))
    never = [(never_sent_recipients(_named(r)), _named(r)["id"]) for r in cursor.fetchall()]
    if never:
        cursor.executemany(_RUN_NEVER_SENT, never)
    cursor.execute(f"DELETE FROM {_R} WHERE token=%s", (token,))
    return count + len(never)


def recover_runs(conn: Any) -> int:
    """Resolve every listed run whose owner is gone (one transaction each)."""
    tokens = [r[0] for r in conn.execute(f"SELECT token FROM {_R} ORDER BY token").fetchall()]
    count = 0
    for token in tokens:
        with conn.transaction(), conn.cursor() as cursor:
            count += resolve_run(cursor, token)
    return count


def _named(row: Any) -> dict[str, Any]:
    if isinstance(row, dict):
        return row
    return dict(zip(("id", "to_addrs", "cc_addrs", "bcc_addrs"), row, strict=True))


class PostgresRun:
    """One live run's lease (its own session) and wire marks (through the store)."""

    coalesce = True  # one UPDATE (a round trip) for every sender's marks of a loop turn

    def __init__(self, store: Any, lease: Any, token: str) -> None:
        self.token = token
        self._store = store
        self._lease = lease
        for _ in range(8):  # a key held by another run (or a recovery): pick another
            key = secrets.randbelow(1 << 31)
            got = lease.execute("SELECT pg_try_advisory_lock(%s, %s)", (_LOCKS, key)).fetchone()
            if got[0]:
                break
        else:  # pragma: no cover - 8 collisions in 2**31 keys
            raise AuditError("no free bulk-run lock key", code="audit_unavailable")
        lease.execute(f"INSERT INTO {_R} (token, lock_key) VALUES (%s, %s)", (token, key))

    def mark(self, audit_ids: Sequence[str]) -> frozenset[str]:
        # One statement, atomic alone: no BEGIN and COMMIT round trips (on the sending path).
        with self._store._transaction(single=True) as cursor:
            cursor.execute(_MARK, (list(audit_ids), self.token))
            marked = {row[0] for row in cursor.fetchall()}
        return frozenset(audit_ids) - marked

    def close(self, *, resolved: bool) -> None:
        """End the lease; the run is forgotten only once every record of it is resolved."""
        with suppress(Exception):
            if resolved:
                self._lease.execute(f"DELETE FROM {_R} WHERE token=%s", (self.token,))
            # Now, not when the server gets round to ending the session: recoverable at once.
            self._lease.execute("SELECT pg_advisory_unlock_all()")
        with suppress(Exception):
            self._lease.close()  # the session ends: its advisory lock with it
