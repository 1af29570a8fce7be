"""Resolving the SQLite store's records of dead bulk runs (see fluxmail.audit.runs).

A run whose process died left its claims ``sending``: those in its wire journal may have
reached the server and become ``unknown``; the others were never handed to a connection and
become ``failed`` with every recipient ``deferred`` (the same key sends them again).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fluxmail.audit.rows import never_sent_recipients
from fluxmail.audit.runs import DeadRun, dead_run
from fluxmail.audit.sqlite_schema import dict_row

if TYPE_CHECKING:
    import sqlite3

__all__ = ["resolve_dead_owners", "resolve_run"]

_RUN_SENDING = (
    "SELECT id, to_addrs, cc_addrs, bcc_addrs FROM messages WHERE run_id=? AND status='sending'"
)
_RUN_UNKNOWN = "UPDATE messages SET status='unknown', updated_at=? WHERE id=? AND status='sending'"
_RUN_NEVER_SENT = (
    "UPDATE messages SET status='failed', recipients=?, final_reply=NULL, sent_at=NULL, "
    "updated_at=? WHERE id=? AND status='sending'"
)


def resolve_run(conn: sqlite3.Connection, journal: DeadRun) -> int:
    """A dead run's 'sending' records: journaled ones 'unknown', the others never sent."""
    cursor = conn.cursor()
    cursor.row_factory = dict_row
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


def resolve_dead_owners(
    conn: sqlite3.Connection,
    root: str,
    rows: Iterable[Mapping[str, Any]],
    dead: list[DeadRun],
) -> bool:
    """Before keys are replayed: resolve the runs, now dead, that left these rows 'sending'
    (a run that died while this store was open; a live one, even of this process, holds its
    lock). Their journals go to ``dead`` (released by the caller). True if any row changed."""
    tokens = {r["run_id"] for r in rows if r["status"] == "sending" and r["run_id"]}
    changed = False
    for token in sorted(tokens):
        journal = dead_run(root, token)
        if journal is not None:
            dead.append(journal)
            changed = resolve_run(conn, journal) > 0 or changed
    return changed
