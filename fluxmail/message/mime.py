"""A direct MIME serializer: a :class:`~fluxmail.message.Message` to its exact wire bytes.

Building an ``EmailMessage`` and flattening it is slow for bulk sending (``email`` is general), so
the bytes are written here directly (RFC 5322 headers, RFC 2045-2047 MIME, RFC 2231 filenames).
``tests/message/test_mime_properties.py`` proves that the standard library parses the result back to
the same structure, headers and decoded parts as the ``EmailMessage`` equivalent.

Guarantees: CRLF line endings only, no bare CR or LF (CVE-2023-51764), every line <= 998 octets
(RFC 5322 §2.1.1), headers folded at 78 where possible, never a Bcc header. The header rules that
``build_message`` enforces live in :mod:`fluxmail.message.headers` (re-exported here).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import quote

from fluxmail.errors import MessageError
from fluxmail.message.addresses import Address
from fluxmail.message.attachments import Attachment
from fluxmail.message.headers import (
    CRLF,
    PRIORITY,
    SOFT_LIMIT,
    fold,
    make_message_id,
    normalize_headers,
    normalize_msg_id,
    normalize_msg_ids,
    normalize_priority,
    normalize_text_header,
    normalize_unsubscribe_url,
    unstructured,
)
from fluxmail.message.model import Message

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

_ASCII_BYTES = bytes(range(128))
# Printable ASCII without '"' and '\\', single spaces: safe inside a quoted string everywhere.
_SAFE_FILENAME = re.compile(r"[!#-\[\]-~]+(?: [!#-\[\]-~]+)*")


def _addresses(name: str, addresses: tuple[Address, ...]) -> str:
    if len(addresses) == 1:
        return fold(name, addresses[0].header_value())
    return fold(name, ", ".join(address.header_value() for address in addresses))


@functools.lru_cache(maxsize=8)  # a bulk run renders thousands of messages in the same second
def _date_header(date: datetime) -> str:
    return format_datetime(date)


# -- body parts ----------------------------------------------------------------------------------

_Part = tuple[str, bytes]  # (header lines, each ending with CRLF; body ending with CRLF)


def _base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    if not encoded:
        return b""
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return b"\r\n".join(lines) + b"\r\n"


# What a 7bit body may hold besides printable ASCII: TAB, CR and LF (RFC 2045 §2.7).
_SEVEN_BIT_TEXT = bytes([0x09, 0x0A, 0x0D, *range(0x20, 0x7F)])
# A bulk run sends one body to many recipients: its encoding is worked out once. The cache
# keeps at most 16 texts of up to 32K characters with their encodings (~1 MB of ASCII text).
_CACHED_TEXT_CHARS = 32 * 1024


def _text_part(subtype: str, text: str) -> _Part:
    """A text part, line endings normalized to CRLF; 7bit, quoted-printable or base64."""
    if len(text) <= _CACHED_TEXT_CHARS:
        return _cached_text_part(subtype, text)
    return _encode_text_part(subtype, text)


def _encode_text_part(subtype: str, text: str) -> _Part:
    norm = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    if not norm.endswith("\n"):
        norm += "\n"
    head = f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}Content-Transfer-Encoding: '
    if norm.isascii():
        data = norm.encode("ascii")
        # No control characters (only TAB, CR and LF are left out) and no line over 78.
        if not data.translate(None, _SEVEN_BIT_TEXT) and _longest_line(data) <= SOFT_LIMIT:
            return head + "7bit" + CRLF, data.replace(b"\n", b"\r\n")
    data = norm.replace("\n", CRLF).encode("utf-8")
    high = len(data.translate(None, _ASCII_BYTES))
    if high * 6 < len(data):  # quoted-printable is the shorter encoding
        return head + "quoted-printable" + CRLF, binascii.b2a_qp(data, istext=True)
    return head + "base64" + CRLF, _base64_lines(data)


_cached_text_part = functools.lru_cache(maxsize=16)(_encode_text_part)


def _longest_line(data: bytes) -> int:
    """Octets in the longest LF-separated line (one split: faster than a regex scan)."""
    return max(map(len, data.split(b"\n")))


def _filename_params(filename: str) -> list[str]:
    """``filename=`` quoted when plain and short, else RFC 2231 (charset, continuations)."""
    # Parsers decode encoded-word look-alikes even inside quotes: those go RFC 2231 too.
    if len(filename) <= 60 and _SAFE_FILENAME.fullmatch(filename) and "=?" not in filename:
        return [f'filename="{filename}"']
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
    if len(line) > SOFT_LIMIT:
        line = f"Content-Disposition: {disposition};{CRLF} " + f";{CRLF} ".join(params)
    head = f"Content-Type: {item.mimetype}{CRLF}{line}{CRLF}"
    if item.content_id is not None:
        head += fold("Content-ID", f"<{item.content_id}>")
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
    if message.html is None and not message.attachments:
        return _text_part("plain", message.text or "")  # one part: no boundary to seed
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
    lines.append(unstructured("Subject", message.subject))
    lines.append(f"Date: {_date_header(message.date)}{CRLF}")
    lines.append(fold("Message-ID", message.message_id))
    if message.in_reply_to:
        lines.append(fold("In-Reply-To", message.in_reply_to))
    if message.references:
        lines.append(fold("References", " ".join(message.references)))
    if message.priority is not None:
        x_priority, importance = PRIORITY[message.priority]
        lines.append(f"X-Priority: {x_priority}{CRLF}Importance: {importance}{CRLF}")
    if message.unsubscribe_url is not None:
        lines.append(fold("List-Unsubscribe", f"<{message.unsubscribe_url}>"))
        lines.append(f"List-Unsubscribe-Post: List-Unsubscribe=One-Click{CRLF}")  # RFC 8058 §3.1
    lines.extend(unstructured(name, value) for name, value in message.headers)
    lines.append(f"MIME-Version: 1.0{CRLF}")
    return lines


def render(message: Message) -> bytes:
    """The exact wire bytes of ``message`` (never a Bcc header)."""
    head, body = _entity(message)
    text = "".join(_top_headers(message)) + head + CRLF
    # Defence in depth for messages built around build_message: no bare CR or LF in headers.
    if not (text.count("\n") == text.count("\r\n") == text.count("\r")):
        raise MessageError("a header contains a bare CR or LF", code="header_injection")
    return text.encode("utf-8") + body
