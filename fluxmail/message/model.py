"""The frozen message model and ``build_message``, the one place where input is validated.

Everything that could break the wire format or inject headers is refused here with a
:class:`~fluxmail.errors.MessageError` carrying a stable ``code``, before anything is sent.
Build messages with :func:`build_message`; constructing :class:`Message` directly (or with
``dataclasses.replace`` of a built message) skips its normalization and rules, but still refuses
header text with a control or line-breaking character and invalid custom header names, whatever
the transport.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import InitVar, dataclass, field, fields
from datetime import datetime, timezone
from functools import cached_property
from types import MappingProxyType
from typing import Any

from fluxmail.errors import MessageError
from fluxmail.message.addresses import (
    Address,
    AddressInput,
    check_header_text,
    parse_address,
    parse_addresses,
)
from fluxmail.message.attachments import (
    Attachment,
    AttachmentInput,
    InlineInput,
    attachment_from,
    attachment_items,
    inline_images_from,
)
from fluxmail.message.css import inline_css as inline_styles
from fluxmail.message.headers import (
    check_header_name,
    make_message_id,
    normalize_headers,
    normalize_msg_id,
    normalize_msg_ids,
    normalize_priority,
    normalize_text_header,
    normalize_unsubscribe_url,
)

__all__ = ["Attachment", "Message", "build_message"]

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


# The last whole second _now() gave: a bulk run builds many messages a second, and they share
# one (immutable) datetime instead of making two each.
_clock: tuple[int, datetime] = (0, datetime.fromtimestamp(0, timezone.utc))


def _now() -> datetime:
    # Whole seconds: the Date header has no finer resolution (RFC 5322 3.3).
    global _clock
    seconds = time.time_ns() // 1_000_000_000
    last = _clock
    if last[0] == seconds:
        return last[1]
    now = datetime.fromtimestamp(seconds, timezone.utc)
    _clock = (seconds, now)
    return now


# Every message without metadata shares this one (read-only) view: a mapping proxy is an
# object the garbage collector counts, one per message in bulk.
NO_METADATA: Mapping[str, Any] = MappingProxyType({})


def _metadata_view(values: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(values) if values else NO_METADATA


@dataclass(frozen=True)
class Message:
    """An immutable, validated message; :func:`~fluxmail.message.mime.render` writes its bytes."""

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
        default_factory=lambda: NO_METADATA, compare=False, hash=False
    )

    # build_message has validated every field: its messages skip the defence-in-depth check
    # (a scan of every header text, per bulk message). Not a field: replace() checks again.
    _validated: InitVar[bool] = False

    def __post_init__(self, _validated: bool) -> None:
        if not _validated:
            _check_wire_text(self)
        if not self.message_id:
            object.__setattr__(self, "message_id", make_message_id(self.sender.domain))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as its fields (a read-only metadata view does not pickle): built in one
        process, sent from another (``send_many(processes=N)``)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["metadata"] = dict(self.metadata)
        return _unpickle_message, (values,)

    @property
    def envelope_recipients(self) -> tuple[Address, ...]:
        """To, Cc and Bcc in order, each address once (compared case-insensitively)."""
        everyone = self.to + self.cc + self.bcc
        if len(everyone) == 1:  # the usual bulk message: nothing to deduplicate
            return everyone
        seen: set[str] = set()
        result: list[Address] = []
        for address in everyone:
            key = address.addr.casefold()
            if key not in seen:
                seen.add(key)
                result.append(address)
        return tuple(result)

    @cached_property
    def needs_smtputf8(self) -> bool:
        people = (self.sender, *self.to, *self.cc, *self.bcc, *self.reply_to)
        if all(address.addr.isascii() for address in people):
            return False  # the usual case, without computing each address's local part
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


def _bodies(body: str, html_body: bool, plain_body: str | None) -> tuple[str | None, str | None]:
    if not isinstance(body, str) or (plain_body is not None and not isinstance(plain_body, str)):
        raise MessageError("the body must be a string", code="invalid_body")
    for text in (body, plain_body):
        if text is None or text.isascii():
            continue  # nothing to check: ASCII text always encodes
        try:
            text.encode("utf-8")
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


def _flag(value: object, name: str) -> bool:
    """``html_body`` and ``inline_css`` are switches: a truthy string must not flip them."""
    if not isinstance(value, bool):
        raise MessageError(
            f"{name} must be True or False, not {type(value).__name__}", code="invalid_message"
        )
    return value


def _optional_msg_id(value: object, field: str) -> str | None:
    """None or "" means none; anything else must be a message id string."""
    if value is None or (isinstance(value, str) and not value):
        return None
    return normalize_msg_id(value, field=field)  # type: ignore[arg-type]


def _idempotency_key(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise MessageError("idempotency_key must be a non-empty string", code="invalid_message")
    # Stored, compared and printed by the audit store and the CLI: plain text only.
    if _CONTROL_OR_SURROGATE.search(value):
        raise MessageError(
            "idempotency_key must not contain control characters or lone surrogates",
            code="invalid_message",
        )
    return value


# What the audit stores can keep (SQLite TEXT, PostgreSQL jsonb): JSON with string keys,
# finite numbers (no NaN/Infinity in JSON), 64-bit integers (what JSON readers keep exactly;
# Python refuses to print ints over 4300 digits) and text without NUL or lone surrogates.
_METADATA_DEPTH = 32
_INT_RANGE = range(-(2**63), 2**63)


def _metadata(value: object) -> Mapping[str, Any]:
    if value is None:
        return NO_METADATA
    if not isinstance(value, Mapping):
        raise MessageError(
            f"metadata must be a mapping of strings to JSON values, not {type(value).__name__}",
            code="invalid_metadata",
        )
    _check_json(value, "metadata", 0)
    return _metadata_view(dict(value))


def _check_json(value: object, where: str, depth: int) -> None:
    if depth > _METADATA_DEPTH:
        raise MessageError(f"{where} is nested too deeply", code="invalid_metadata")
    if value is None or isinstance(value, bool) or (isinstance(value, int) and value in _INT_RANGE):
        return
    if isinstance(value, float) and math.isfinite(value):
        return
    if isinstance(value, str):
        if "\x00" in value or _SURROGATE.search(value):
            raise MessageError(f"{where} has a NUL or a lone surrogate", code="invalid_metadata")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MessageError(f"{where}: key {key!r} is not a string", code="invalid_metadata")
            _check_json(key, where, depth + 1)
            _check_json(item, f"{where}[{key[:40]!r}]", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", depth + 1)
        return
    raise MessageError(
        f"{where}: {type(value).__name__} is not a JSON value (str, int, finite float, bool, "
        "None, list or dict)",
        code="invalid_metadata",
    )


def _attachments(
    value: Iterable[AttachmentInput] | AttachmentInput | None,
) -> tuple[Attachment, ...]:
    if value is None:
        return ()  # the usual case, without the generator
    return tuple(attachment_from(item) for item in attachment_items(value))


def _custom_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None, params: Mapping[str, object]
) -> tuple[tuple[str, str], ...]:
    """``headers``; none may be one that a parameter given in ``params`` writes."""
    if headers is None:
        return ()
    return normalize_headers(headers, used={name for name, value in params.items() if value})


def _items(value: object) -> tuple[object, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _check_wire_text(message: Message) -> None:
    """Defence in depth for a Message made around build_message (directly, or changed with
    dataclasses.replace): build_message's rules for header text and custom header names,
    whatever transport writes them."""
    texts: list[tuple[str, object]] = [
        ("subject", message.subject),
        ("message_id", message.message_id),
        ("in_reply_to", message.in_reply_to or ""),
        ("priority", message.priority or ""),
        ("unsubscribe_url", message.unsubscribe_url or ""),
    ]
    texts += (("references", ref) for ref in _items(message.references))
    for role in ("sender", "to", "cc", "bcc", "reply_to"):
        for address in _items(getattr(message, role)):
            if not isinstance(address, Address):
                raise MessageError(
                    f"{role} must hold Address objects, not {type(address).__name__}",
                    code="invalid_address",
                    field=role,
                )
            texts += ((role, address.addr), (role, address.name))
    for pair in _items(message.headers):
        name, value = pair if isinstance(pair, tuple) and len(pair) == 2 else (pair, "")
        texts += (("header name", name), (f"header {name!r}", value))
    for where, text in texts:
        if not isinstance(text, str):
            raise MessageError(
                f"{where} must be a string, not {type(text).__name__}",
                code="invalid_header_value",
                field=where,
            )
        if where == "header name":
            check_header_name(text)
        else:
            check_header_text(text, field=where)


def _unpickle_message(values: dict[str, Any]) -> Message:
    values["metadata"] = _metadata_view(values["metadata"])
    return Message(**values, _validated=True)  # it passed a check in the process that pickled it


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
    if sender is None:
        raise MessageError("a sender is required", code="invalid_address")
    from_ = parse_address(sender, field="sender")
    to = parse_addresses(recipients, field="recipients")
    cc_ = parse_addresses(cc, field="cc")
    bcc_ = parse_addresses(bcc, field="bcc")
    if not (to or cc_ or bcc_):
        raise MessageError("the message has no recipients", code="no_recipients")
    text, html = _bodies(body, _flag(html_body, "html_body"), plain_body)
    if _flag(inline_css, "inline_css") and html is not None:
        html = inline_styles(html)
    images = inline_images_from(inline_images)
    if images and html is None:
        raise MessageError("inline images need an HTML body", code="invalid_attachment")
    used = {"reply_to": reply_to, "in_reply_to": in_reply_to, "references": references}
    used.update(priority=priority, unsubscribe_url=unsubscribe_url)
    return Message(
        sender=from_,
        to=to,
        cc=cc_,
        bcc=bcc_,
        reply_to=parse_addresses(reply_to, field="reply_to"),
        subject=normalize_text_header("Subject", subject),
        text=text,
        html=html,
        attachments=_attachments(attachments),
        inline_images=images,
        in_reply_to=_optional_msg_id(in_reply_to, "in_reply_to"),
        references=normalize_msg_ids(references),
        priority=normalize_priority(priority),
        unsubscribe_url=normalize_unsubscribe_url(unsubscribe_url),
        headers=_custom_headers(headers, used),
        message_id=_optional_msg_id(message_id, "message_id") or "",
        date=_when(date),
        idempotency_key=_idempotency_key(idempotency_key),
        metadata=_metadata(metadata),
        _validated=True,
    )
