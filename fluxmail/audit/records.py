"""What an audit store keeps: the record handed in before sending, and the record read back.

Plain frozen data with no I/O, shared by both backends, the engine and the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, overload

from fluxmail.results import SendResult

__all__ = [
    "ACCEPTED_STATUSES",
    "NEVER_HANDED",
    "REPLAY_STATUSES",
    "STATUSES",
    "AuditRecord",
    "Claim",
    "Claims",
    "DraftClaim",
    "OutboundRecord",
    "outbound_from_fields",
]

# ``draft``: a saved draft (``draft.save_draft()``), sent later by ``send_draft``. ``pending`` and
# ``cancelled`` are outbox rows (fluxmail.audit.outbox): waiting for a worker, or withdrawn.
STATUSES = (
    "draft", "dry_run", "pending", "sending", "sent", "partial", "queued", "failed", "unknown",
    "cancelled",
)  # fmt: skip
# Anything may have been accepted (or a worker will send it): a send with the same key
# returns the record, never resends. The others (failed, dry_run, draft, cancelled): nothing
# was accepted, a new attempt uses the same record.
REPLAY_STATUSES = frozenset({"sent", "partial", "queued", "unknown", "sending", "pending"})
# Statuses whose finish() stamps sent_at.
ACCEPTED_STATUSES = frozenset({"sent", "partial", "queued"})
_RESULT_STATUSES = frozenset({"sent", "partial", "queued", "dry_run", "failed", "unknown"})
# What a recovered bulk record that no connection was ever given says (see RunLease).
NEVER_HANDED = "never handed to the server: the sending process stopped first"


@dataclass(frozen=True)
class OutboundRecord:
    """What the mailer hands in before contacting the server (``eml`` carries no Bcc header)."""

    message_id: str
    idempotency_key: str | None
    content_hash: str
    backend: str
    provider: str | None
    host: str | None
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    metadata: Mapping[str, Any]
    eml: bytes
    text: str | None
    html: str | None
    attachments: tuple[tuple[str, str, bytes], ...]
    status: Literal["sending", "dry_run", "draft", "pending"] = "sending"
    # Who wrote it: FluxMail(origin="mcp"); None when not given.
    origin: str | None = None


def outbound_from_fields(fields: dict[str, Any]) -> OutboundRecord:
    """The OutboundRecord of these fields (every one of them, by name), as the constructor
    would make it: bulk runs build one per message, and the frozen dataclass's ``__init__``
    sets its 18 fields one ``object.__setattr__`` at a time (~2 µs; one dict is a tenth)."""
    record = object.__new__(OutboundRecord)
    object.__setattr__(record, "__dict__", fields)
    return record


@dataclass(frozen=True)
class AuditRecord:
    """One stored record, as reading returns it (``bcc`` is None unless asked for)."""

    id: str
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    status: str
    backend: str
    provider: str | None
    host: str | None
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...] | None
    subject: str
    message_id: str
    idempotency_key: str | None
    recipients: Mapping[str, Any]
    attempts: tuple[Mapping[str, Any], ...]
    final_reply: Mapping[str, Any] | None
    duration: float | None
    metadata: Mapping[str, Any]
    folder: Path | None
    # Manifest of the attachment copies: filename, stored name, mimetype, size, sha256.
    attachments: tuple[Mapping[str, Any], ...] = field(default=())
    # The transport that took it, without credentials (a failover member: which one).
    transport: str | None = None
    # The id an HTTP API gave the message (SendGrid's X-Message-Id, Resend's id); None over SMTP.
    provider_message_id: str | None = None
    # FluxMail(origin=...) of the mailer that wrote it ("mcp" for the MCP server), else None.
    origin: str | None = None

    def result(self) -> SendResult:
        """The recorded outcome as a SendResult (``sending`` reads as ``unknown``)."""
        status = self.status if self.status in _RESULT_STATUSES else "unknown"
        # A draft was never sent; an outbox row waiting for a worker is queued for delivery
        # (as an API that accepted it for later); a cancelled one will never go.
        status = {"draft": "dry_run", "pending": "queued", "cancelled": "failed"}.get(
            self.status, status
        )
        recipients = dict(self.recipients)
        if not recipients and status == "unknown":
            # Killed or still in flight: every envelope recipient's outcome is unknown.
            for address in (*self.to, *self.cc, *(self.bcc or ())):
                recipients[address] = {"address": address, "status": "unknown"}
        return SendResult.from_dict(
            {
                "status": status,
                "message_id": self.message_id,
                "recipients": recipients,
                "attempts": self.attempts,
                "final_reply": self.final_reply,
                "elapsed": self.duration or 0.0,
                "audit_id": self.id,
                "transport": self.transport,
                "provider_message_id": self.provider_message_id,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (datetimes as ISO 8601, folder as a string)."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "sent_at": iso(self.sent_at),
            "status": self.status,
            "backend": self.backend,
            "provider": self.provider,
            "host": self.host,
            "sender": self.sender,
            "to": list(self.to),
            "cc": list(self.cc),
            "bcc": list(self.bcc) if self.bcc is not None else None,
            "subject": self.subject,
            "message_id": self.message_id,
            "idempotency_key": self.idempotency_key,
            "recipients": {k: dict(v) for k, v in self.recipients.items()},
            "attempts": [dict(a) for a in self.attempts],
            "final_reply": dict(self.final_reply) if self.final_reply is not None else None,
            "duration": self.duration,
            "metadata": dict(self.metadata),
            "folder": str(self.folder) if self.folder is not None else None,
            "attachments": [dict(a) for a in self.attachments],
            "transport": self.transport,
            "provider_message_id": self.provider_message_id,
            "origin": self.origin,
        }


@dataclass(frozen=True)
class Claim:
    """The answer to claim(): ``replay`` not None means "do not contact the server"."""

    audit_id: str
    replay: SendResult | None = None


class Claims(Sequence[Claim]):
    """The answer to claim_many(), in the records' order: a sequence of :class:`Claim`.

    Held as each record's audit id and the replays of those not to send, so a bulk batch
    reads ``ids`` and ``replays`` without a Claim object per record: every object alive at
    the claim counts toward the garbage collector's next run (docs/performance.md)."""

    __slots__ = ("ids", "replays")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.replays: dict[int, SendResult] = {}  # by position in ``ids``

    @classmethod
    def of(cls, claims: Iterable[Claim]) -> Claims:
        made = cls()
        for claim in claims:
            made.add(claim.audit_id, claim.replay)
        return made

    def add(self, audit_id: str, replay: SendResult | None = None) -> None:
        if replay is not None:
            self.replays[len(self.ids)] = replay
        self.ids.append(audit_id)

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Claim: ...
    @overload
    def __getitem__(self, index: slice) -> list[Claim]: ...
    def __getitem__(self, index: int | slice) -> Claim | list[Claim]:
        if isinstance(index, slice):
            return [self[n] for n in range(*index.indices(len(self.ids)))]
        audit_id = self.ids[index]  # IndexError as a list gives it
        return Claim(audit_id, self.replays.get(index % len(self.ids)))

    def __iter__(self) -> Iterator[Claim]:
        replays = self.replays
        return (Claim(audit_id, replays.get(n)) for n, audit_id in enumerate(self.ids))

    def __repr__(self) -> str:
        return f"Claims({list(self)!r})"


@dataclass(frozen=True)
class DraftClaim:
    """The answer to claim_draft(): ``replay`` not None means "already sent, do not send";
    otherwise the record is now ``sending`` and this is exactly what to send."""

    audit_id: str
    replay: SendResult | None = None
    spec: Mapping[str, Any] = field(default_factory=dict)
    eml: bytes = b""
    attachments: tuple[bytes, ...] = ()  # contents in position order (attachments, inline images)
