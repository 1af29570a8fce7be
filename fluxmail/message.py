"""The frozen message model and ``build_message``, the one place where input is validated.

Everything that could break the wire format or inject headers is refused here with a
:class:`~fluxmail.errors.MessageError` carrying a stable ``code``, before anything is sent.
Build messages with :func:`build_message`; constructing :class:`Message` directly skips
validation and is meant for trusted callers (``dataclasses.replace`` of a built message).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from types import MappingProxyType
from typing import Any, Union

from fluxmail.addresses import (
    Address,
    AddressInput,
    check_header_text,
    parse_address,
    parse_addresses,
)
from fluxmail.errors import MessageError

__all__ = ["Attachment", "Message", "build_message"]

AttachmentInput = Union[str, "os.PathLike[str]", "Attachment", tuple[Any, ...]]
InlineInput = Union[str, "os.PathLike[str]", bytes, "Attachment"]


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 2045 §5.1 token
_CONTENT_ID = re.compile(r"[!-~]+")
# Sniffed when inline image bytes come without a filename.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def check_filename(filename: str) -> None:
    """A filename is one non-empty path component without control characters."""
    if not isinstance(filename, str) or not filename.strip():
        raise MessageError("an attachment needs a non-empty filename", code="invalid_attachment")
    check_header_text(filename, field="attachment filename")
    if "/" in filename or "\\" in filename or filename in (".", ".."):
        raise MessageError(
            f"attachment filename {filename!r} must not contain a path", code="invalid_attachment"
        )


def check_mimetype(mimetype: str, *, filename: str) -> None:
    """``type/subtype`` tokens only; multipart/* and message/* cannot be base64 (RFC 2046 §5)."""
    main, slash, sub = mimetype.partition("/") if isinstance(mimetype, str) else ("", "", "")
    if not slash or not _TOKEN.fullmatch(main) or not _TOKEN.fullmatch(sub) or len(mimetype) > 200:
        raise MessageError(
            f"attachment {filename!r}: {mimetype!r} is not a MIME type", code="invalid_attachment"
        )
    if main.lower() in ("multipart", "message"):
        raise MessageError(
            f"attachment {filename!r}: {mimetype} cannot be attached as a file",
            code="invalid_attachment",
        )


def guess_mimetype(filename: str, content: bytes | None) -> str:
    """Guess from the name (``mimetypes``), then from magic bytes; octet-stream otherwise."""
    import mimetypes

    guessed = mimetypes.guess_type(filename, strict=False)[0] if filename else None
    if guessed and not guessed.startswith(("multipart/", "message/")):
        return guessed
    for magic, mimetype in _MAGIC:
        if content is not None and content.startswith(magic):
            return mimetype
    if content is not None and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def check_content_id(content_id: str) -> str:
    """A Content-ID (RFC 2392) without its angle brackets; printable ASCII, no spaces."""
    if not isinstance(content_id, str):
        raise MessageError("a content id must be a string", code="invalid_attachment")
    check_header_text(content_id, field="content id")
    cid = (
        content_id[1:-1] if content_id.startswith("<") and content_id.endswith(">") else content_id
    )
    if not _CONTENT_ID.fullmatch(cid) or "<" in cid or ">" in cid or len(cid) > 900:
        raise MessageError(f"{content_id!r} is not a valid content id", code="invalid_attachment")
    return cid


def _read_regular_file(path: str | os.PathLike[str]) -> bytes:
    """Read a regular file; refuse directories, devices, FIFOs and sockets without opening them."""
    shown = repr(os.fspath(path))
    not_regular = MessageError(
        f"attachment {shown} is not a regular file", code="invalid_attachment"
    )
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise not_regular
        # O_NONBLOCK + fstat close the race where the path becomes a FIFO after stat().
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise not_regular
            return handle.read()
    except FileNotFoundError as exc:
        raise MessageError(f"attachment not found: {shown}", code="attachment_not_found") from exc
    except OSError as exc:
        raise MessageError(
            f"attachment {shown} cannot be read: {exc.strerror}", code="invalid_attachment"
        ) from exc


@dataclass(frozen=True)
class Attachment:
    """A file carried by the message; ``content_id`` set means inline (``multipart/related``)."""

    filename: str
    content: bytes = field(repr=False)
    mimetype: str = "application/octet-stream"
    content_id: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.content, (bytearray, memoryview)):
            object.__setattr__(self, "content", bytes(self.content))
        if not isinstance(self.content, bytes):
            raise MessageError(
                f"attachment {self.filename!r}: content must be bytes", code="invalid_attachment"
            )
        check_filename(self.filename)
        check_mimetype(self.mimetype, filename=self.filename)
        if self.content_id is not None:
            object.__setattr__(self, "content_id", check_content_id(self.content_id))

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        mimetype: str | None = None,
        filename: str | None = None,
        content_id: str | None = None,
    ) -> Attachment:
        """Read a regular file; the filename defaults to its base name, the type is guessed."""
        content = _read_regular_file(path)
        name = filename if filename is not None else os.path.basename(os.fspath(path))
        return cls(name, content, mimetype or guess_mimetype(name, content), content_id)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def _now() -> datetime:
    # Whole seconds: the Date header has no finer resolution (RFC 5322 3.3).
    return datetime.now(timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class Message:
    """An immutable, validated message; :func:`fluxmail.mime.render` gives its wire bytes."""

    sender: Address
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    inline_images: tuple[Attachment, ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    priority: str | None = None
    unsubscribe_url: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    message_id: str = ""
    date: datetime = field(default_factory=_now)
    idempotency_key: str | None = None
    metadata: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not self.message_id:
            from fluxmail.mime import make_message_id

            object.__setattr__(self, "message_id", make_message_id(self.sender.domain))

    @property
    def envelope_recipients(self) -> tuple[Address, ...]:
        """To, Cc and Bcc in order, each address once (compared case-insensitively)."""
        seen: set[str] = set()
        result: list[Address] = []
        for address in (*self.to, *self.cc, *self.bcc):
            key = address.addr.casefold()
            if key not in seen:
                seen.add(key)
                result.append(address)
        return tuple(result)

    @cached_property
    def needs_smtputf8(self) -> bool:
        people = (self.sender, *self.to, *self.cc, *self.bcc, *self.reply_to)
        return any(address.needs_smtputf8 for address in people)

    def content_hash(self) -> str:
        """sha256 of the canonical content, without Message-ID, Date, key and metadata."""

        def people(addresses: tuple[Address, ...]) -> list[list[str]]:
            return [[a.addr, a.name] for a in addresses]

        def files(items: tuple[Attachment, ...]) -> list[list[str | None]]:
            return [[a.filename, a.mimetype, a.content_id, a.sha256] for a in items]

        canonical = {
            "sender": people((self.sender,)),
            "to": people(self.to),
            "cc": people(self.cc),
            "bcc": people(self.bcc),
            "reply_to": people(self.reply_to),
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "attachments": files(self.attachments),
            "inline_images": files(self.inline_images),
            "in_reply_to": self.in_reply_to,
            "references": list(self.references),
            "priority": self.priority,
            "unsubscribe_url": self.unsubscribe_url,
            "headers": [list(pair) for pair in self.headers],
        }
        blob = json.dumps(canonical, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("ascii")).hexdigest()


def _attachment(item: AttachmentInput) -> Attachment:
    if isinstance(item, Attachment):
        return item
    if isinstance(item, (str, os.PathLike)):
        return Attachment.from_path(item)
    if isinstance(item, tuple) and len(item) in (2, 3) and isinstance(item[0], str):
        filename, content = item[0], item[1]
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise MessageError(
                f"attachment {filename!r}: content must be bytes", code="invalid_attachment"
            )
        mimetype = item[2] if len(item) == 3 else None
        return Attachment(filename, bytes(content), mimetype or guess_mimetype(filename, None))
    raise MessageError(
        f"attachment {item!r}: expected a path, an Attachment or (filename, bytes[, mimetype])",
        code="invalid_attachment",
    )


def _inline(content_id: str, item: InlineInput) -> Attachment:
    cid = check_content_id(content_id)
    if isinstance(item, Attachment):
        return Attachment(item.filename, item.content, item.mimetype, cid)
    if isinstance(item, (bytes, bytearray, memoryview)):
        import mimetypes

        data = bytes(item)
        mimetype = guess_mimetype("", data)
        name = cid.partition("@")[0] + (mimetypes.guess_extension(mimetype) or "")
        return Attachment(name, data, mimetype, cid)
    if isinstance(item, (str, os.PathLike)):
        return Attachment.from_path(item, content_id=cid)
    raise MessageError(
        f"inline image {content_id!r}: expected a path, bytes or an Attachment",
        code="invalid_attachment",
    )


def _bodies(body: str, html_body: bool, plain_body: str | None) -> tuple[str | None, str | None]:
    if not isinstance(body, str) or (plain_body is not None and not isinstance(plain_body, str)):
        raise MessageError("the body must be a string", code="invalid_body")
    for text in (body, plain_body):
        try:
            (text or "").encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MessageError("the body is not valid Unicode text", code="invalid_body") from exc
    if html_body:
        return plain_body, body
    if plain_body is not None:
        raise MessageError(
            "plain_body adds a text alternative to an HTML body; set html_body=True",
            code="invalid_body",
        )
    return body, None


def _attachment_items(value: Any) -> list[Any]:
    if value is None:
        return []
    single_tuple = isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[1], bytes)
    if isinstance(value, (str, os.PathLike, Attachment)) or single_tuple:
        return [value]
    return list(value)


def _when(date: datetime | None) -> datetime:
    if date is None:
        return _now()
    if not isinstance(date, datetime):
        raise MessageError("date must be a datetime", code="invalid_message")
    # A naive datetime is taken as UTC: the Date header must carry an explicit offset.
    return date if date.tzinfo is not None else date.replace(tzinfo=timezone.utc)


def build_message(
    *,
    subject: str,
    recipients: AddressInput | Iterable[AddressInput] | None,
    body: str,
    sender: AddressInput | None,
    cc: AddressInput | Iterable[AddressInput] | None = None,
    bcc: AddressInput | Iterable[AddressInput] | None = None,
    reply_to: AddressInput | Iterable[AddressInput] | None = None,
    attachments: Iterable[AttachmentInput] | AttachmentInput | None = None,
    html_body: bool = False,
    plain_body: str | None = None,
    in_reply_to: str | None = None,
    references: str | Iterable[str] | None = None,
    priority: str | None = None,
    unsubscribe_url: str | None = None,
    inline_images: Mapping[str, InlineInput] | None = None,
    inline_css: bool = False,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    message_id: str | None = None,
    date: datetime | None = None,
) -> Message:
    """Validate every input and return a frozen :class:`Message` (upstream parameter meanings)."""
    from fluxmail import mime

    if sender is None:
        raise MessageError("a sender is required", code="invalid_address")
    from_ = parse_address(sender, field="sender")
    to = parse_addresses(recipients, field="recipients")
    cc_ = parse_addresses(cc, field="cc")
    bcc_ = parse_addresses(bcc, field="bcc")
    if not (to or cc_ or bcc_):
        raise MessageError("the message has no recipients", code="no_recipients")
    text, html = _bodies(body, html_body, plain_body)
    if inline_css and html is not None:
        from fluxmail.css import inline_css as inline_styles

        html = inline_styles(html)
    images = tuple(_inline(cid, item) for cid, item in (inline_images or {}).items())
    if images and html is None:
        raise MessageError("inline images need an HTML body", code="invalid_attachment")
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not idempotency_key
    ):
        raise MessageError("idempotency_key must be a non-empty string", code="invalid_message")
    used = {"reply_to": reply_to, "in_reply_to": in_reply_to, "references": references}
    used.update(priority=priority, unsubscribe_url=unsubscribe_url)
    return Message(
        sender=from_,
        to=to,
        cc=cc_,
        bcc=bcc_,
        reply_to=parse_addresses(reply_to, field="reply_to"),
        subject=mime.normalize_text_header("Subject", subject),
        text=text,
        html=html,
        attachments=tuple(_attachment(item) for item in _attachment_items(attachments)),
        inline_images=images,
        in_reply_to=mime.normalize_msg_id(in_reply_to, field="in_reply_to")
        if in_reply_to
        else None,
        references=mime.normalize_msg_ids(references),
        priority=mime.normalize_priority(priority),
        unsubscribe_url=mime.normalize_unsubscribe_url(unsubscribe_url),
        headers=mime.normalize_headers(headers, used={k for k, v in used.items() if v}),
        message_id=mime.normalize_msg_id(message_id, field="message_id") if message_id else "",
        date=_when(date),
        idempotency_key=idempotency_key,
        metadata=MappingProxyType(dict(metadata or {})),
    )
