"""Audit records and idempotency: nothing sent without a record, nothing sent twice.

Modules, lowest first: ``records`` (frozen data), ``ids``, ``problems``, ``rows`` (columns and
JSON), ``contract`` (AuditStore, RunLease), ``snapshots``/``deferred``/``runs`` (the SQLite
store's folder, deferred snapshots and wire journals), the backends ``sqlite`` and
``postgres``, then ``open`` (``open_store``) and ``log`` (the mailer's side). Light on import:
``sqlite3`` and ``psycopg`` load only when a store is opened.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fluxmail.audit.contract import AuditStore, RunLease
    from fluxmail.audit.open import open_store
    from fluxmail.audit.records import AuditRecord, Claim, Claims, OutboundRecord

__all__ = [
    "AuditRecord", "AuditStore", "Claim", "Claims", "OutboundRecord", "RunLease", "open_store",
]  # fmt: skip

_LAZY = {
    "AuditRecord": "records",
    "Claim": "records",
    "Claims": "records",
    "OutboundRecord": "records",
    "AuditStore": "contract",
    "RunLease": "contract",
    "open_store": "open",
}


def __getattr__(name: str) -> Any:
    # PEP 562, as the package facade does: importing fluxmail.audit.log (every mailer) must not
    # load the records and store code a mailer without a store never uses (cold start).
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fluxmail.audit' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fluxmail.audit.{module}"), name)
