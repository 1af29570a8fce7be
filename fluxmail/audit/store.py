"""Kept for imports written against earlier layouts: the audit store's names, re-exported.

The names live in fluxmail.audit.records (the records), fluxmail.audit.contract (the store
and lease contract), fluxmail.audit.ids and fluxmail.audit.open (``open_store``); new code
imports them from there or from ``fluxmail.audit``.
"""

from __future__ import annotations

from fluxmail.audit.contract import AuditStore, RunLease
from fluxmail.audit.ids import new_id
from fluxmail.audit.open import open_store
from fluxmail.audit.records import (
    NEVER_HANDED,
    REPLAY_STATUSES,
    STATUSES,
    AuditRecord,
    Claim,
    OutboundRecord,
)

__all__ = [
    "NEVER_HANDED",
    "REPLAY_STATUSES",
    "STATUSES",
    "AuditRecord",
    "AuditStore",
    "Claim",
    "OutboundRecord",
    "RunLease",
    "new_id",
    "open_store",
]
