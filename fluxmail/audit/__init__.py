"""Audit records and idempotency: nothing sent without a record, nothing sent twice.

Modules, lowest first: ``records`` (frozen data), ``ids``, ``problems``, ``rows`` (columns and
JSON), ``contract`` (AuditStore, RunLease), ``snapshots``/``deferred``/``runs`` (the SQLite
store's folder, deferred snapshots and wire journals), the backends ``sqlite`` and
``postgres``, then ``open`` (``open_store``) and ``log`` (the mailer's side). Light on import:
``sqlite3`` and ``psycopg`` load only when a store is opened.
"""

from __future__ import annotations

from fluxmail.audit.contract import AuditStore, RunLease
from fluxmail.audit.open import open_store
from fluxmail.audit.records import AuditRecord, Claim, OutboundRecord

__all__ = ["AuditRecord", "AuditStore", "Claim", "OutboundRecord", "RunLease", "open_store"]
