"""What a transport is given (``Mail``, its ``Envelope``) and gives back (``TransportResult``).

Apart from the contract (fluxmail.transport.base) so that building a mailer does not create
these classes: a frozen dataclass is compiled from generated source when it is made, which a
cold start pays for, and they are needed from the first send on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fluxmail._lazy import lazy_module
from fluxmail.errors import DeliveryError

if TYPE_CHECKING:
    from fluxmail import results
    from fluxmail.message.model import Message
    from fluxmail.results import Attempt, MessageStatus, RecipientStatus, ServerReply
else:  # read by the first send, not to build a mailer (cold start)
    results = lazy_module("fluxmail.results")

__all__ = ["Envelope", "Mail", "TransportResult"]


@dataclass(frozen=True)
class Envelope:
    """Who the server is told the message is from and for (RFC 5321 MAIL FROM / RCPT TO)."""

    sender: str
    recipients: tuple[str, ...]
    smtputf8: bool = False


@dataclass(frozen=True)
class Mail:
    """One message ready to go: its envelope, its wire bytes and the model they came from."""

    envelope: Envelope
    data: bytes
    message: Message


@dataclass(frozen=True)
class TransportResult:
    """What a transport did with one message, keyed by envelope address.

    ``error`` is the last delivery error (None when nothing failed); a transport never raises
    one, so the engine records every outcome the same way. ``transport`` names where the
    message went without credentials (``smtps://b.example:465``, ``memory``): with
    ``failover(...)`` the member that took it. ``provider_message_id`` is the id an HTTP API
    gave the message (SendGrid's ``X-Message-Id``, Resend's ``id``); None over SMTP.
    """

    status: MessageStatus
    recipients: Mapping[str, RecipientStatus] = field(default_factory=dict)
    attempts: tuple[Attempt, ...] = ()
    final_reply: ServerReply | None = None
    elapsed: float = 0.0
    error: DeliveryError | None = None
    transport: str | None = None
    provider_message_id: str | None = None

    @classmethod
    def handed_over(
        cls, mail: Mail, started: float, transport: str | None = None
    ) -> TransportResult:
        """Every recipient accepted (a local transport took the message whole)."""
        recipients = {a: results.RecipientStatus(a, "sent") for a in mail.envelope.recipients}
        return cls("sent", recipients, elapsed=time.monotonic() - started, transport=transport)
