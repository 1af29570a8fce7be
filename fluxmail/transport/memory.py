"""The memory transport: keeps every message in ``outbox`` for assertions in the user's tests.

``fluxmail.testing`` is the public face of the outbox (docs/recipes/testing.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from fluxmail.config.resolve import Config
from fluxmail.transport.base import Transport

if TYPE_CHECKING:
    from email.message import EmailMessage

    from fluxmail.message.model import Message
    from fluxmail.transport.mail import Mail, TransportResult

__all__ = ["TRANSPORT", "MemoryTransport", "Outbox", "SentMessage", "outbox"]


# A NamedTuple, not a frozen dataclass: as immutable, and the class costs every memory
# mailer's cold start about a fifth as much to make (dataclass compiles generated source).
class SentMessage(NamedTuple):
    """One message the memory backend received: the model, the exact bytes and the envelope."""

    message: Message
    data: bytes
    sender: str
    recipients: tuple[str, ...]

    @property
    def subject(self) -> str:
        return self.message.subject

    @property
    def to(self) -> tuple[str, ...]:
        return tuple(a.addr for a in self.message.to)

    def parsed(self) -> EmailMessage:
        """The bytes read back by the standard library, for structural assertions."""
        import email
        import email.policy

        return email.message_from_bytes(self.data, policy=email.policy.default)


class Outbox:
    """A thread-safe list of every message sent through the memory backend."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[SentMessage] = []

    def append(self, sent: SentMessage) -> None:
        with self._lock:
            self._messages.append(sent)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    @property
    def messages(self) -> list[SentMessage]:
        with self._lock:
            return list(self._messages)

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[SentMessage]:
        return iter(self.messages)

    def find(self, *, to: str | None = None, subject: str | None = None) -> list[SentMessage]:
        """Messages whose envelope includes ``to`` and/or whose subject equals ``subject``."""
        found = self.messages
        if to is not None:
            found = [m for m in found if to.lower() in (r.lower() for r in m.recipients)]
        if subject is not None:
            found = [m for m in found if m.subject == subject]
        return found


outbox = Outbox()


class MemoryTransport(Transport):
    name = "memory"

    @classmethod
    def from_config(cls, config: Config) -> MemoryTransport:
        return cls()

    async def send(self, mail: Mail) -> TransportResult:
        started = time.monotonic()
        env = mail.envelope
        outbox.append(SentMessage(mail.message, mail.data, env.sender, env.recipients))
        return self.handed_over(mail, started)


TRANSPORT = MemoryTransport
