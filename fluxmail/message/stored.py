"""A built message as plain JSON and back, for the outbox: a worker in another process (or on
another machine) rebuilds the model that an HTTP API transport maps field by field.

JSON rather than pickle: a row anyone can write to the database must never run code in the
worker. Attachment contents are not in the JSON (the audit store keeps them as bytes); the
spec names them by position, in the order of ``attachments`` then ``inline_images``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any

from fluxmail.errors import MessageError
from fluxmail.message.addresses import Address
from fluxmail.message.attachments import Attachment
from fluxmail.message.model import Message

__all__ = ["SPEC_VERSION", "message_from_spec", "message_to_spec"]

SPEC_VERSION = 1


def message_to_spec(message: Message) -> dict[str, Any]:
    """Everything of the model but attachment contents, as JSON-ready values."""

    def people(addresses: tuple[Address, ...]) -> list[list[str]]:
        return [[a.addr, a.name] for a in addresses]

    def files(items: tuple[Attachment, ...]) -> list[list[str | None]]:
        return [[a.filename, a.mimetype, a.content_id] for a in items]

    return {
        "v": SPEC_VERSION,
        "sender": [message.sender.addr, message.sender.name],
        "to": people(message.to),
        "cc": people(message.cc),
        "bcc": people(message.bcc),
        "reply_to": people(message.reply_to),
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "attachments": files(message.attachments),
        "inline_images": files(message.inline_images),
        "in_reply_to": message.in_reply_to,
        "references": list(message.references),
        "priority": message.priority,
        "unsubscribe_url": message.unsubscribe_url,
        "headers": [list(pair) for pair in message.headers],
        "message_id": message.message_id,
        "date": message.date.isoformat(),
        "idempotency_key": message.idempotency_key,
        "metadata": dict(message.metadata),
    }


def message_from_spec(spec: Mapping[str, Any], contents: Sequence[bytes]) -> Message:
    """The model again, from ``message_to_spec`` and the attachment contents in order.

    The values were validated when the message was built; a spec that does not fit (a newer
    version, a row edited by hand) is a ``MessageError``, never a half-built message.
    """
    if spec.get("v") != SPEC_VERSION:
        raise MessageError(
            f"stored message format {spec.get('v')!r} is not one this fluxmail reads "
            f"({SPEC_VERSION}); upgrade the worker",
            code="invalid_stored_message",
        )
    try:
        return _rebuild(spec, list(contents))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise MessageError(
            f"stored message does not fit its format: {type(exc).__name__}",
            code="invalid_stored_message",
        ) from exc


def _rebuild(spec: Mapping[str, Any], contents: list[bytes]) -> Message:
    def people(items: list[list[str]]) -> tuple[Address, ...]:
        return tuple(Address(addr, name) for addr, name in items)

    files = [*spec["attachments"], *spec["inline_images"]]
    if len(files) != len(contents):
        raise ValueError("attachment count")
    built = [
        Attachment(name, content, mimetype, content_id)
        for (name, mimetype, content_id), content in zip(files, contents, strict=True)
    ]
    split = len(spec["attachments"])
    return Message(
        sender=Address(*spec["sender"]),
        to=people(spec["to"]),
        cc=people(spec["cc"]),
        bcc=people(spec["bcc"]),
        reply_to=people(spec["reply_to"]),
        subject=spec["subject"],
        text=spec["text"],
        html=spec["html"],
        attachments=tuple(built[:split]),
        inline_images=tuple(built[split:]),
        in_reply_to=spec["in_reply_to"],
        references=tuple(spec["references"]),
        priority=spec["priority"],
        unsubscribe_url=spec["unsubscribe_url"],
        headers=tuple((name, value) for name, value in spec["headers"]),
        message_id=spec["message_id"],
        date=datetime.fromisoformat(spec["date"]),
        idempotency_key=spec["idempotency_key"],
        metadata=MappingProxyType(dict(spec["metadata"])),
    )
