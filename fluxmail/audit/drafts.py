"""Drafts, the rules both stores share: which records are drafts, and which may be sent.

A draft is a record saved with status ``draft`` and its model in ``spec`` (like an outbox row,
but with no ``due_at``: no worker ever takes it). ``claim_draft`` turns it ``sending`` once;
afterwards its record answers every other ``send_draft`` as a replay. A send that ``failed``
(nothing was accepted) may be claimed again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fluxmail.errors import AuditError

__all__ = ["CLAIMABLE", "SENDABLE", "not_a_draft", "sendable"]

# Statuses claim_draft sends again (nothing accepted yet).
SENDABLE = frozenset({"draft", "failed"})
# Statuses a draft may have: sendable, or sent (or on its way) and replayed.
CLAIMABLE = SENDABLE | {"sending", "sent", "partial", "queued", "unknown"}


def sendable(row: Mapping[str, Any]) -> bool:
    return row["status"] in SENDABLE


def not_a_draft(audit_id: str, status: str) -> AuditError:
    return AuditError(
        f"audit record {audit_id!r} is not a draft (status {status!r}; drafts are saved with "
        "draft.save_draft() or fluxmail send --draft)",
        code="not_a_draft",
    )
