"""Drafts: a message stored for review (status ``draft``), sent later exactly as it was saved.

``save`` writes the record as a send would (snapshot, bodies, attachments) plus the model as
JSON (``spec``, as the outbox does), so any transport can send it later; no server is
contacted. ``send`` runs the send protocol on the stored message: the claim is the store's
``claim_draft`` (``draft`` -> ``sending`` in one transaction, or a replay of the record when it
was sent already), then transmit and finish as for any single send. The bytes and Message-ID
are the saved ones; the model is rebuilt from ``spec`` for transports that map fields.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fluxmail.audit.contract import AuditStore
from fluxmail.audit.log import AuditLog, outbound_record
from fluxmail.config.resolve import Config, audit_off_reason
from fluxmail.engine import protocol
from fluxmail.engine.outgoing import Outgoing
from fluxmail.engine.protocol import Outcome
from fluxmail.engine.sending import Engine, SingleRecorder
from fluxmail.errors import ConfigurationError, MessageError
from fluxmail.message.model import Message
from fluxmail.message.stored import message_from_spec, message_to_spec
from fluxmail.results import SendResult

if TYPE_CHECKING:
    from fluxmail.audit.records import DraftClaim

__all__ = ["discard", "draft_store", "save", "send"]


def draft_store(audit: AuditLog, config: Config) -> AuditStore:
    """The store drafts live in; refused when the audit is off (there is nowhere to keep them)."""
    if not audit.enabled:
        why = audit_off_reason(config)
        raise ConfigurationError(
            f"drafts are kept in the audit store, and {why}. Turn the audit on "
            "(FLUXMAIL_AUDIT=true, or audit=True; FLUXMAIL_AUDIT_URL=postgresql://... to share "
            "drafts between machines), or send() the message",
            code="drafts_need_audit",
        )
    return audit.store()


def save(audit: AuditLog, config: Config, message: Message, data: bytes) -> str:
    """Store the message as a ``draft``; its audit id. Nothing is sent."""
    store = draft_store(audit, config)
    record = outbound_record(config, message, data, "draft")
    return store.save_draft(record, message_to_spec(message))


def discard(audit: AuditLog, config: Config, audit_id: str) -> None:
    draft_store(audit, config).discard_draft(audit_id)


async def send(engine: Engine, audit_id: str) -> Outcome:
    """The stored draft through the send protocol; never raises for a delivery fault."""
    # Opening the store is blocking I/O (a PostgreSQL connect): not on the event loop.
    store = await asyncio.to_thread(draft_store, engine.audit, engine.config)
    if engine.config.dry_run:  # nothing goes out and the draft stays a draft
        record = await asyncio.to_thread(store.get, audit_id)
        return Outcome(SendResult("dry_run", record.message_id, audit_id=audit_id))
    claim = await asyncio.to_thread(store.claim_draft, audit_id)
    if claim.replay is not None:
        return Outcome(claim.replay)
    try:
        out = _outgoing(claim)
    except MessageError as exc:
        # Claimed, never transmitted: failed, and sendable again once the cause is fixed.
        message_id = str(claim.spec.get("message_id", ""))
        unsent = SendResult("failed", message_id, audit_id=audit_id)
        await asyncio.to_thread(store.finish, audit_id, unsent)
        return Outcome(None, exc)
    return await protocol.transmit(
        out, lambda: engine.transport.send(out.mail), SingleRecorder(engine)
    )


def _outgoing(claim: DraftClaim) -> Outgoing:
    """The saved bytes with the model rebuilt from the saved spec (same Message-ID)."""
    message = message_from_spec(claim.spec, claim.attachments)
    out = Outgoing.prepare(message, claim.eml, dry=False)
    out.audit_id = claim.audit_id
    return out
