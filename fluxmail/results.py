"""What happened to a message and to each of its recipients, as plain frozen data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "Attempt",
    "MessageStatus",
    "RecipientOutcome",
    "RecipientStatus",
    "SendResult",
    "ServerReply",
]

MessageStatus = Literal["sent", "partial", "queued", "dry_run", "failed", "unknown"]
RecipientOutcome = Literal["sent", "rejected", "deferred", "unknown"]


@dataclass(frozen=True)
class ServerReply:
    """One SMTP reply: code, RFC 3463 enhanced status (if any) and text."""

    code: int
    text: str
    enhanced_status: str | None = None

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class RecipientStatus:
    """The outcome for one envelope recipient."""

    address: str
    status: RecipientOutcome
    code: int | None = None
    enhanced_status: str | None = None
    text: str = ""


def overall_status(recipients: Mapping[str, RecipientStatus]) -> MessageStatus:
    """A message's status from its recipients': any ``unknown`` makes it unknown, all sent is
    sent, some sent is partial, none is failed (the SMTP retry loop, failover, outbox retries)."""
    statuses = [r.status for r in recipients.values()]
    if "unknown" in statuses:
        return "unknown"
    if statuses and all(s == "sent" for s in statuses):
        return "sent"
    return "partial" if "sent" in statuses else "failed"


@dataclass(frozen=True)
class Attempt:
    """One try at delivering the message; ``error`` is None when it succeeded."""

    number: int
    started_at: float
    elapsed: float
    error: str | None = None
    error_code: str | None = None
    smtp_code: int | None = None
    smtp_text: str | None = None


@dataclass(frozen=True)
class SendResult:
    """The outcome of ``draft.send()``.

    ``status`` is ``sent`` (every recipient accepted), ``partial`` (some refused or deferred),
    ``queued`` (handed to a queueing backend), ``dry_run``, ``failed`` or ``unknown`` (the
    connection was lost after the final "."; the message may or may not have been accepted).
    """

    status: MessageStatus
    message_id: str
    recipients: Mapping[str, RecipientStatus] = field(default_factory=dict)
    attempts: tuple[Attempt, ...] = ()
    final_reply: ServerReply | None = None
    elapsed: float = 0.0
    audit_id: str | None = None
    replayed: bool = False
    # Where it went, without credentials (``smtps://b.example:465``; the member of a failover).
    transport: str | None = None
    # The id an HTTP API gave the message (its own, not the Message-ID); None over SMTP.
    provider_message_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipients", MappingProxyType(dict(self.recipients)))

    @property
    def ok(self) -> bool:
        return self.status in ("sent", "partial", "queued", "dry_run")

    @property
    def accepted(self) -> tuple[str, ...]:
        return tuple(a for a, r in self.recipients.items() if r.status == "sent")

    @property
    def refused(self) -> tuple[str, ...]:
        return tuple(a for a, r in self.recipients.items() if r.status != "sent")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "message_id": self.message_id,
            "recipients": {a: asdict(r) for a, r in self.recipients.items()},
            "attempts": [asdict(a) for a in self.attempts],
            "final_reply": asdict(self.final_reply) if self.final_reply else None,
            "elapsed": self.elapsed,
            "audit_id": self.audit_id,
            "replayed": self.replayed,
            "transport": self.transport,
            "provider_message_id": self.provider_message_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SendResult:
        reply = data.get("final_reply")
        return cls(
            status=data["status"],
            message_id=data["message_id"],
            recipients={a: RecipientStatus(**r) for a, r in data.get("recipients", {}).items()},
            attempts=tuple(Attempt(**a) for a in data.get("attempts", ())),
            final_reply=ServerReply(**reply) if reply else None,
            elapsed=float(data.get("elapsed", 0.0)),
            audit_id=data.get("audit_id"),
            replayed=bool(data.get("replayed", False)),
            transport=data.get("transport"),
            provider_message_id=data.get("provider_message_id"),
        )
