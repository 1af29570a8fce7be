"""Audit records and idempotency: nothing sent without a record, nothing sent twice.

Light on import: the SQLite and PostgreSQL backends load only when a store is opened.
"""

from __future__ import annotations

from fluxmail.audit.store import AuditRecord, AuditStore, Claim, OutboundRecord, open_store

__all__ = ["AuditRecord", "AuditStore", "Claim", "OutboundRecord", "open_store"]
