"""Opening an audit store: PostgreSQL for a URL, else SQLite plus a snapshot folder.

Above both backends (they never import this module). The backend is found by name when a
store is opened, as transports are (``fluxmail.transport.registry``): a mailer that never opens
its store (audit off, the memory transport, a Lambda's cold start) loads neither backend's
modules, and each backend imports its driver (``sqlite3``, ``psycopg``) only then.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from fluxmail.audit.contract import AuditStore
from fluxmail.audit.snapshots import resolve_directory

__all__ = ["open_store"]

# kind -> (module, class): the store classes, loaded on first open.
BACKENDS = {
    "sqlite": ("fluxmail.audit.sqlite", "SQLiteStore"),
    "postgres": ("fluxmail.audit.postgres", "PostgresStore"),
}


def backend(kind: str) -> Any:
    module, name = BACKENDS[kind]
    return getattr(importlib.import_module(module), name)


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
        store: AuditStore = backend("postgres")(url, password=password, stale_after=stale_after)
        return store
    folder = resolve_directory(directory, explicit=explicit)
    store = backend("sqlite")(folder, stale_after=stale_after)
    return store
