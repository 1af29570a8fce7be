"""Opening an audit store: PostgreSQL for a URL, else SQLite plus a snapshot folder.

Above both backends (they never import this module). Importing it loads neither ``sqlite3``
nor ``psycopg``: each backend imports its driver when a store is opened.
"""

from __future__ import annotations

from pathlib import Path

from fluxmail.audit.contract import AuditStore
from fluxmail.audit.postgres import PostgresStore
from fluxmail.audit.snapshots import resolve_directory
from fluxmail.audit.sqlite import SQLiteStore

__all__ = ["open_store"]


def open_store(
    *,
    directory: Path | None = None,
    explicit: bool = False,
    url: str | None = None,
    password: str | None = None,
    stale_after: float = 900.0,
) -> AuditStore:
    """Open the PostgreSQL store when ``url`` is given, else the SQLite store in a folder.

    ``directory=None`` means ``.fluxmail/`` in the working directory, falling back to the temp
    dir (with one warning) when it cannot be written; ``explicit=True`` turns that fallback
    into ``AuditError(code="audit_unwritable")``. Opening resolves the claims of bulk runs whose
    process died (see RunLease) and marks stale ``sending`` records ``unknown`` (SQLite at once;
    PostgreSQL on first use, since it connects lazily).
    """
    if url is not None:
        return PostgresStore(url, password=password, stale_after=stale_after)
    folder = resolve_directory(directory, explicit=explicit)
    return SQLiteStore(folder, stale_after=stale_after)
