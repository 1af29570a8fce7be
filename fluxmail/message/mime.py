"""A direct MIME serializer: a :class:`~fluxmail.message.Message` to its exact wire bytes.

Building an ``EmailMessage`` and flattening it is slow for bulk sending (``email`` is general), so
the bytes are written here directly (RFC 5322 headers, RFC 2045-2047 MIME, RFC 2231 filenames).
``tests/test_mime_properties.py`` proves that the standard library parses the result back to
the same structure, headers and decoded parts as the ``EmailMessage`` equivalent.

Guarantees: CRLF line endings only, no bare CR or LF (CVE-2023-51764), every line <= 998 octets
(RFC 5322 §2.1.1), headers folded at 78 where possible, never a Bcc header. This module also
owns the header rules that ``build_message`` enforces (reserved names, folding limits).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING

from fluxmail.errors import MessageError, shown
from fluxmail.message.addresses import Address, check_header_text, encode_words, idna_domain

if TYPE_CHECKING:
    from fluxmail.message.model import Attachment, Message

__all__ = [
    "make_message_id",
    "normalize_headers",
    "normalize_msg_id",
    "normalize_msg_ids",
    "normalize_priority",
    "normalize_text_header",
    "normalize_unsubscribe_url",
    "render",
]

CRLF = "\r\n"
_SOFT_LIMIT = 78  # RFC 5322 §2.1.1 SHOULD
_HARD_LIMIT = 998  # RFC 5322 §2.1.1 MUST, octets without the CRLF
# Headers the library always writes itself.
_OWNED = frozenset({"from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version"})
# Headers a custom value may set only when the matching parameter is not used.
_CONDITIONAL = {
    "reply-to": "reply_to",
    "in-reply-to": "in_reply_to",
    "references": "references",
    "list-unsubscribe": "unsubscribe_url",
    "list-unsubscribe-post": "unsubscribe_url",
    "x-priority": "priority",
    "importance": "priority",
}
# RFC 5322 §3.6: fields that may occur at most once.
_SINGLE = frozenset({*_CONDITIONAL, "sender"})
_PRIORITY = {"high": ("1", "high"), "normal": ("3", "normal"), "low": ("5", "low")}
_FTEXT = re.compile(r"[!-9;-~]+")  # RFC 5322 §3.6.8 field name
_MSG_ID = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")
_LOOKS_ENCODED = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")
_TOKENS = re.compile(r" *[^ ]+")
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_BYTES = bytes(range(128))
# Printable ASCII without '"' and '\\', single spaces: safe inside a quoted string everywhere.
_SAFE_FILENAME = re.compile(r"[!#-\[\]-~]+(?: [!#-\[\]-~]+)*")


def _line_too_long(name: str) -> MessageError:
    return MessageError(
        f"the {name} header has a word too long to fold under {_HARD_LIMIT} octets",
        code="line_too_long",
        field=name,
    )


def _fold(name: str, value: str) -> str:
    """``Name: value`` folded before spaces (never adding or removing a character), with CRLF."""
    line = f"{name}: {value}" if value else f"{name}:"
    if len(line) <= _SOFT_LIMIT:
        return line + CRLF
    tokens = _TOKENS.findall(value)
    lines: list[str] = []
    current = f"{name}: {tokens[0]}"
    for token in tokens[1:]:
        if len(current) + len(token) > _SOFT_LIMIT:
            lines.append(current)
            current = token  # starts with a space: a valid continuation line (§2.2.3)
        else:
            current += token
    lines.append(current)
    if any(_octets(part) > _HARD_LIMIT for part in lines):
        raise _line_too_long(name)
    return CRLF.join(lines) + CRLF


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _unstructured(name: str, value: str) -> str:
    """An unstructured header; RFC 2047 encoded words when non-ASCII or ambiguous."""
    if not value.isascii() or _LOOKS_ENCODED.search(value):
        value = encode_words(value)
    return _fold(name, value)


def _addresses(name: str, addresses: tuple[Address, ...]) -> str:
    return _fold(name, ", ".join(address.header_value() for address in addresses))


# -- validation used by build_message ------------------------------------------------------------


def normalize_text_header(name: str, value: str) -> str:
    """Strip a header value and prove it is safe and foldable."""
    if not isinstance(value, str):
        raise MessageError(f"{name} must be a string", code="invalid_header_value", field=name)
    check_header_text(value, field=name)
    value = value.strip()
    _unstructured(name, value)
    return value


def normalize_msg_id(value: str, *, field: str) -> str:
    """A msg-id (RFC 5322 §3.6.4) with its angle brackets: ``<left@right>``."""
    if not isinstance(value, str):
        raise MessageError(f"{field} must be a string", code="invalid_message_id")
    check_header_text(value, field=field)
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not _MSG_ID.fullmatch(text) or len(text) > 900:
        raise MessageError(f"{field}: {value!r} is not a message id", code="invalid_message_id")
    return f"<{text}>"


def normalize_msg_ids(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(normalize_msg_id(item, field="references") for item in value.split())
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise MessageError(
            "references must be a string or a list of message id strings, "
            f"not {type(value).__name__}",
            code="invalid_message_id",
        )
    return tuple(normalize_msg_id(item, field="references") for item in value)


def normalize_priority(value: str | None) -> str | None:
    if value is None:
        return None
    key = value.strip().lower() if isinstance(value, str) else ""
    if key not in _PRIORITY:
        raise MessageError(
            f"priority {value!r} is not one of high, normal, low", code="invalid_priority"
        )
    return key


def normalize_unsubscribe_url(value: str | None) -> str | None:
    """RFC 8058 one-click unsubscribe needs an https URL."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    if not isinstance(value, str):
        raise MessageError("unsubscribe_url must be a string", code="invalid_unsubscribe_url")
    check_header_text(value, field="unsubscribe_url")
    url = value.strip()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise MessageError(
            f"unsubscribe_url {value!r} is not a URL", code="invalid_unsubscribe_url"
        ) from exc
    if parts.scheme.lower() != "https" or not parts.hostname or not url.isascii():
        raise MessageError(
            "unsubscribe_url must be an https URL (RFC 8058); percent-encode non-ASCII",
            code="invalid_unsubscribe_url",
        )
    if any(char in url for char in ' <>"'):
        raise MessageError("unsubscribe_url has unsafe characters", code="invalid_unsubscribe_url")
    _fold("List-Unsubscribe", f"<{url}>")
    return url


def _header_pairs(headers: object) -> Iterable[tuple[str, str]]:
    """``{name: value}`` or ``[(name, value), ...]``, both strings; anything else is refused."""
    if isinstance(headers, Mapping):
        pairs: Iterable[object] = headers.items()
    elif isinstance(headers, (str, bytes, bytearray)) or not isinstance(headers, Iterable):
        raise MessageError(
            f"headers must be a mapping of header names to values, not {type(headers).__name__}",
            code="invalid_header_value",
        )
    else:
        pairs = headers
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise MessageError(
                f"headers: {shown(pair)} is not a (name, value) pair", code="invalid_header_value"
            )
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str):
            raise MessageError(
                f"header {shown(name)}: names and values must be strings, not "
                f"{type(name).__name__} and {type(value).__name__}",
                code="invalid_header_value",
            )
        yield name, value


def normalize_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None, *, used: set[str]
) -> tuple[tuple[str, str], ...]:
    """Custom headers: valid names, safe values, nothing that overrides a library header."""
    result: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in _header_pairs(() if headers is None else headers):
        check_header_text(name, field="header name")
        if not _FTEXT.fullmatch(name):
            raise MessageError(f"{name!r} is not a valid header name", code="invalid_header_name")
        key = name.lower()
        param = _CONDITIONAL.get(key)
        if key in _OWNED or key.startswith("content-") or (param is not None and param in used):
            raise MessageError(
                f"the {name} header is set by fluxmail"
                + (f" from the {param} argument" if param else ""),
                code="reserved_header",
            )
        if key in _SINGLE and key in seen:
            raise MessageError(f"the {name} header is given twice", code="duplicate_header")
        seen.add(key)
        result.append((name, normalize_text_header(name, value)))
    return tuple(result)


@functools.lru_cache(maxsize=8)  # a bulk run renders thousands of messages in the same second
def _date_header(date: datetime) -> str:
    return format_datetime(date)


def make_message_id(domain: str) -> str:
    """A unique ``<id@domain>`` with the sender's IDNA domain (never the host's name)."""
    try:
        host = idna_domain(domain)
    except UnicodeError:
        host = ""
    if not host or host.lower() == "localhost" or host.lower().endswith(".localhost"):
        host = "fluxmail.invalid"  # RFC 2606: reserved, never resolves
    return f"<{time.time_ns() // 1000:x}.{os.urandom(10).hex()}@{host}>"


# -- body parts ----------------------------------------------------------------------------------

_Part = tuple[str, bytes]  # (header lines, each ending with CRLF; body ending with CRLF)


def _base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    if not encoded:
        return b""
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return b"\r\n".join(lines) + b"\r\n"


def _text_part(subtype: str, text: str) -> _Part:
    """A text part, line endings normalized to CRLF; 7bit, quoted-printable or base64."""
    norm = text.replace("\r\n", "\n").replace("\r", "\n")
    if not norm.endswith("\n"):
        norm += "\n"
    norm = norm.replace("\n", CRLF)
    head = f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}Content-Transfer-Encoding: '
    if (
        norm.isascii()
        and max(map(len, norm.split(CRLF))) <= _SOFT_LIMIT
        and not _CONTROLS.search(norm)
    ):
        return head + "7bit" + CRLF, norm.encode("ascii")
    data = norm.encode("utf-8")
    high = len(data.translate(None, _ASCII_BYTES))
    if high * 6 < len(data):  # quoted-printable is the shorter encoding
        return head + "quoted-printable" + CRLF, binascii.b2a_qp(data, istext=True)
    return head + "base64" + CRLF, _base64_lines(data)


def _filename_params(filename: str) -> list[str]:
    """``filename=`` quoted when plain and short, else RFC 2231 (charset, continuations)."""
    # Parsers decode encoded-word look-alikes even inside quotes: those go RFC 2231 too.
    if len(filename) <= 60 and _SAFE_FILENAME.fullmatch(filename) and "=?" not in filename:
        return [f'filename="{filename}"']
    from urllib.parse import quote

    pieces = [quote(char, safe="") for char in filename]
    chunks: list[str] = [""]
    for piece in pieces:
        if len(chunks[-1]) + len(piece) > 60:
            chunks.append("")
        chunks[-1] += piece
    if len(chunks) == 1:
        return [f"filename*=utf-8''{chunks[0]}"]
    chunks[0] = "utf-8''" + chunks[0]
    return [f"filename*{i}*={chunk}" for i, chunk in enumerate(chunks)]


def _file_part(item: Attachment) -> _Part:
    disposition = "attachment" if item.content_id is None else "inline"
    params = _filename_params(item.filename)
    line = f"Content-Disposition: {disposition}; {'; '.join(params)}"
    if len(line) > _SOFT_LIMIT:
        line = f"Content-Disposition: {disposition};{CRLF} " + f";{CRLF} ".join(params)
    head = f"Content-Type: {item.mimetype}{CRLF}{line}{CRLF}"
    if item.content_id is not None:
        head += _fold("Content-ID", f"<{item.content_id}>")
    return head + "Content-Transfer-Encoding: base64" + CRLF, _base64_lines(item.content)


def _multipart(subtype: str, parts: list[_Part], seed: str) -> _Part:
    """RFC 2046 §5.1.1; a boundary derived from the Message-ID that no part contains."""
    boundary = f"=_fm_{seed}_{subtype[:3]}"
    counter = 0
    while any(
        f"--{boundary}".encode("ascii") in body or f"--{boundary}" in head for head, body in parts
    ):
        counter += 1
        boundary = f"=_fm_{seed}_{subtype[:3]}{counter}"
    delimiter = f"--{boundary}\r\n".encode("ascii")
    chunks: list[bytes] = []
    for head, body in parts:
        chunks += (delimiter, head.encode("ascii"), b"\r\n", body, b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    return f'Content-Type: multipart/{subtype}; boundary="{boundary}"{CRLF}', b"".join(chunks)


def _entity(message: Message) -> _Part:
    seed = hashlib.sha1(message.message_id.encode("utf-8")).hexdigest()[:20]
    html: _Part | None = None
    if message.html is not None:
        html = _text_part("html", message.html)
        if message.inline_images:
            images = [_file_part(item) for item in message.inline_images]
            html = _multipart("related", [html, *images], seed)
    if html is None:
        body = _text_part("plain", message.text or "")
    elif message.text is not None:
        body = _multipart("alternative", [_text_part("plain", message.text), html], seed)
    else:
        body = html
    if message.attachments:
        files = [_file_part(item) for item in message.attachments]
        body = _multipart("mixed", [body, *files], seed)
    return body


# -- the message -----------------------------------------------------------------------------------


def _top_headers(message: Message) -> list[str]:
    lines = [_addresses("From", (message.sender,))]
    if message.to:
        lines.append(_addresses("To", message.to))
    if message.cc:
        lines.append(_addresses("Cc", message.cc))
    if message.reply_to:
        lines.append(_addresses("Reply-To", message.reply_to))
    lines.append(_unstructured("Subject", message.subject))
    lines.append(f"Date: {_date_header(message.date)}{CRLF}")
    lines.append(_fold("Message-ID", message.message_id))
    if message.in_reply_to:
        lines.append(_fold("In-Reply-To", message.in_reply_to))
    if message.references:
        lines.append(_fold("References", " ".join(message.references)))
    if message.priority is not None:
        x_priority, importance = _PRIORITY[message.priority]
        lines.append(f"X-Priority: {x_priority}{CRLF}Importance: {importance}{CRLF}")
    if message.unsubscribe_url is not None:
        lines.append(_fold("List-Unsubscribe", f"<{message.unsubscribe_url}>"))
        lines.append(f"List-Unsubscribe-Post: List-Unsubscribe=One-Click{CRLF}")  # RFC 8058 §3.1
    lines.extend(_unstructured(name, value) for name, value in message.headers)
    lines.append(f"MIME-Version: 1.0{CRLF}")
    return lines


def render(message: Message) -> bytes:
    """The exact wire bytes of ``message`` (never a Bcc header)."""
    head, body = _entity(message)
    text = "".join(_top_headers(message)) + head + CRLF
    # Defence in depth for messages built around build_message: no bare CR or LF in headers.
    if text.count("\n") != text.count("\r\n") or text.count("\r") != text.count("\r\n"):
        raise MessageError("a header contains a bare CR or LF", code="header_injection")
    return text.encode("utf-8") + body
