"""The contract every transport implements: ``await transport.send(mail) -> TransportResult``.

A transport gets the message three ways at once (the envelope, the exact bytes and the model)
because they need different ones: SMTP writes the bytes, an HTTP API may post the model's
fields, the memory transport keeps the model for assertions. It reports what happened to each
envelope recipient and never raises for a delivery fault: the engine turns the result into the
caller's ``SendResult`` and error, records it, and decides nothing is resent.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from fluxmail._lazy import lazy_module
from fluxmail.errors import MessageError

if TYPE_CHECKING:
    from fluxmail.transport import mail as values
    from fluxmail.transport.mail import Mail, TransportResult
else:  # the value classes are made by the first send, not by building a mailer
    values = lazy_module("fluxmail.transport.mail")

__all__ = ["Lane", "Transport"]
_MOVED = frozenset({"Envelope", "Mail", "TransportResult"})


def __getattr__(name: str) -> Any:
    # They lived here before fluxmail.transport.mail: a custom transport's imports keep working.
    if name in _MOVED:
        return getattr(values, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Transport(ABC):
    """Where a message goes. Subclasses implement ``send``; the rest has working defaults."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._held = 0
        self._hold_lock = threading.Lock()

    @abstractmethod
    async def send(self, mail: Mail) -> TransportResult:
        """Deliver one message; report every recipient's outcome, never raise for a fault."""

    def handed_over(self, mail: Mail, started: float) -> TransportResult:
        """The result of a transport that took the message whole (every recipient sent)."""
        return values.TransportResult.handed_over(mail, started, self.name)

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
