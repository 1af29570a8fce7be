"""The contract every transport implements: ``await transport.send(mail) -> TransportResult``.

A transport gets the message three ways at once (the envelope, the exact bytes and the model)
because they need different ones: SMTP writes the bytes, an HTTP API may post the model's
fields, the memory transport keeps the model for assertions. It reports what happened to each
envelope recipient and never raises for a delivery fault: the engine turns the result into the
caller's ``SendResult`` and error, records it, and decides nothing is resent.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from fluxmail._lazy import lazy_module
from fluxmail.errors import DeliveryError, MessageError

if TYPE_CHECKING:
    from fluxmail import results
    from fluxmail.message.model import Message
    from fluxmail.results import Attempt, MessageStatus, RecipientStatus, ServerReply
else:  # read by the first send, not to build a mailer (cold start)
    results = lazy_module("fluxmail.results")

__all__ = ["Envelope", "Lane", "Mail", "Transport", "TransportResult"]


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


class Transport(ABC):
    """Where a message goes. Subclasses implement ``send``; the rest has working defaults."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._held = 0
        self._hold_lock = threading.Lock()

    @abstractmethod
    async def send(self, mail: Mail) -> TransportResult:
        """Deliver one message; report every recipient's outcome, never raise for a fault."""

    def hold(self, delta: int) -> int:
        """``with mailer:`` keeps connections open while the count is above zero."""
        with self._hold_lock:
            self._held += delta
            return self._held

    @property
    def held(self) -> bool:
        return self._held > 0

    def lane(self) -> Lane:
        """A bulk worker's own path to this transport (see Lane)."""
        return Lane(self)

    async def aclose(self) -> None:
        """Release what this event loop holds (connections, clients)."""
        return None


class Lane:
    """One bulk worker's path to a transport, for the length of a run.

    The default shares ``transport.send``. A transport with connections of its own (SMTP)
    returns a lane that owns one kept-open connection: ``ready()`` opens it before anything is
    marked as handed to the wire, and with ``primes`` the next message rides behind the current
    one (``then``) in the same round trip. With ``batch_size`` above 1 the lane takes up to that
    many messages in one request (``send_batch``: an HTTP API's batch endpoint).
    """

    primes: bool = False
    batch_size: int = 1

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def ready(self) -> None:
        """Connected and logged in, so only the message's own commands remain; may raise."""
        return None

    async def send(self, mail: Mail, then: Mail | None = None) -> TransportResult:
        return await self._transport.send(mail)

    async def send_batch(self, mails: Sequence[Mail]) -> list[TransportResult | MessageError]:
        """One result per message, in order; a MessageError for one that went nowhere (the
        default sends each alone)."""
        done: list[TransportResult | MessageError] = []
        for mail in mails:
            try:
                done.append(await self.send(mail))
            except MessageError as exc:
                done.append(exc)
        return done

    async def close(self) -> None:
        return None
