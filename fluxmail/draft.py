"""A message bound to the mailer that will send it; immutable, safe to share."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from fluxmail.errors import ConfigurationError
from fluxmail.message.model import Message
from fluxmail.results import SendResult


class DraftSender(Protocol):
    """What a draft sends through (``FluxMail``); a protocol, so drafts need not import it."""

    def _render(self, message: Message) -> bytes: ...

    def _send_sync(self, draft: Draft, dry_run: bool) -> SendResult: ...

    async def _send_async(self, draft: Draft, dry_run: bool) -> SendResult: ...

    def _enqueue(
        self, built: list[tuple[Message, bytes]], send_at: object, connection: Any
    ) -> list[str]: ...

    async def _enqueue_async(
        self, built: list[tuple[Message, bytes]], send_at: object, connection: Any
    ) -> list[str]: ...

    def _save_draft(self, message: Message, data: bytes) -> str: ...


@dataclass(frozen=True, eq=False)
class Draft:
    """Returned by ``mailer.create(...)``; ``send()`` or ``await send_async()`` delivers it."""

    mailer: DraftSender = field(repr=False)
    message: Message
    _render_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @property
    def message_id(self) -> str:
        return self.message.message_id

    @property
    def _bytes(self) -> bytes:
        # Rendered once, under a lock: with DKIM (a timestamp in the signature) two renders
        # differ, and the bytes sent must be the bytes audited. functools.cached_property
        # has no lock from Python 3.12 on.
        data: bytes | None = self.__dict__.get("_rendered")
        if data is None:
            with self._render_lock:
                data = self.__dict__.get("_rendered")
                if data is None:
                    data = self.mailer._render(self.message)  # the MIME writer's, DKIM-signed
                    self.__dict__["_rendered"] = data
        return data

    def as_bytes(self) -> bytes:
        """The exact bytes that go on the wire (and into the audit snapshot); never a Bcc header."""
        return self._bytes

    def send(self, dry_run: bool = False) -> SendResult:
        """Deliver now; returns a SendResult or raises a DeliveryError carrying one."""
        return self.mailer._send_sync(self, _dry_run(dry_run))

    async def send_async(self, dry_run: bool = False) -> SendResult:
        """The same as ``send()``, on the caller's event loop."""
        return await self.mailer._send_async(self, _dry_run(dry_run))

    def enqueue(self, *, send_at: object = None, connection: Any = None) -> str:
        """Store the message for a worker to deliver (``pending``) and return its audit id;
        nothing contacts the server. ``send_at``: an aware datetime, a timedelta from now or
        epoch seconds. ``connection``: the caller's psycopg connection, whose transaction the
        row joins (docs/outbox.md)."""
        [audit_id] = self.mailer._enqueue([(self.message, self._bytes)], send_at, connection)
        return audit_id

    def save_draft(self) -> str:
        """Store the message for review (status ``draft``) and return its audit id; nothing
        contacts the server. ``mailer.send_draft(id)`` sends exactly these bytes later;
        ``mailer.discard_draft(id)`` deletes it (docs/audit.md, "Drafts")."""
        return self.mailer._save_draft(self.message, self.as_bytes())

    async def enqueue_async(self, *, send_at: object = None, connection: Any = None) -> str:
        """``enqueue()`` on the caller's event loop (``connection``: a psycopg
        ``AsyncConnection``; without one the store is written from a worker thread)."""
        built = [(self.message, self._bytes)]
        [audit_id] = await self.mailer._enqueue_async(built, send_at, connection)
        return audit_id


def _dry_run(value: object) -> bool:
    # A truthy string such as "false" must not quietly turn a real send into a dry run.
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"send(dry_run=...) must be True or False, not {type(value).__name__}",
            code="invalid_option",
        )
    return value
