"""Closing a store's database connection when the store is dropped without ``close()``.

Both stores keep one connection per process. A mailer dropped without ``close()`` must not
leak it (Python 3.13 warns about an SQLite connection collected open), and a forked child must
never close its parent's: it would end the parent's PostgreSQL session, and an SQLite
connection must not be used across a fork at all.
"""

from __future__ import annotations

import os
import weakref
from contextlib import suppress
from typing import Any

__all__ = ["close_when_dropped"]


def close_when_dropped(store: object, conn: Any, *, at_exit: bool = True) -> None:
    """Close ``conn`` once ``store`` is collected (and, with ``at_exit``, when the interpreter
    exits), in this process only."""
    weakref.finalize(store, _close_if_owner, conn, os.getpid()).atexit = at_exit


def _close_if_owner(conn: Any, pid: int) -> None:
    if os.getpid() == pid:
        with suppress(Exception):
            conn.close()
