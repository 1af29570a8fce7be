"""Header rules: folding, the names fluxmail owns, and the normalizers ``build_message`` uses.

Shared by the model (which validates with them) and the MIME writer (which writes with them), so
that neither imports the other. RFC 5322 §2.1.1 line limits, §2.2.3 folding, §3.6 field rules.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from functools import lru_cache
from urllib.parse import urlsplit

from fluxmail.errors import MessageError, shown
from fluxmail.message.addresses import check_header_text, encode_words
from fluxmail.message.domains import idna_domain

__all__ = [
    "CRLF",
    "HARD_LIMIT",
    "PRIORITY",
    "SOFT_LIMIT",
    "check_header_name",
    "fold",
    "make_message_id",
    "normalize_headers",
    "normalize_msg_id",
    "normalize_msg_ids",
    "normalize_priority",
    "normalize_text_header",
    "normalize_unsubscribe_url",
    "unstructured",
]

CRLF = "\r\n"
SOFT_LIMIT = 78  # RFC 5322 §2.1.1 SHOULD
HARD_LIMIT = 998  # RFC 5322 §2.1.1 MUST, octets without the CRLF
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
PRIORITY = {"high": ("1", "high"), "normal": ("3", "normal"), "low": ("5", "low")}
_FTEXT = re.compile(r"[!-9;-~]+")  # RFC 5322 §3.6.8 field name
_MSG_ID = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")
_LOOKS_ENCODED = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")
_TOKENS = re.compile(r" *[^ ]+")


def _line_too_long(name: str) -> MessageError:
    return MessageError(
        f"the {name} header has a word too long to fold under {HARD_LIMIT} octets",
        code="line_too_long",
        field=name,
    )


def fold(name: str, value: str) -> str:
    """``Name: value`` folded before spaces (never adding or removing a character), with CRLF."""
    line = f"{name}: {value}" if value else f"{name}:"
    if len(line) <= SOFT_LIMIT:
        return line + CRLF
    tokens = _TOKENS.findall(value)
    lines: list[str] = []
    current = f"{name}: {tokens[0]}"
    for token in tokens[1:]:
        if len(current) + len(token) > SOFT_LIMIT:
            lines.append(current)
            current = token  # starts with a space: a valid continuation line (§2.2.3)
        else:
            current += token
    lines.append(current)
    if any(_octets(part) > HARD_LIMIT for part in lines):
        raise _line_too_long(name)
    return CRLF.join(lines) + CRLF


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def unstructured(name: str, value: str) -> str:
    """An unstructured header; RFC 2047 encoded words when non-ASCII or ambiguous."""
    if not value.isascii() or _LOOKS_ENCODED.search(value):
        value = encode_words(value)
    return fold(name, value)


# -- validation used by build_message ------------------------------------------------------------


def normalize_text_header(name: str, value: str) -> str:
    """Strip a header value and prove it is safe and foldable."""
    if not isinstance(value, str):
        raise MessageError(f"{name} must be a string", code="invalid_header_value", field=name)
    check_header_text(value, field=name)
    value = value.strip()
    unstructured(name, value)
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
    if key not in PRIORITY:
        raise MessageError(
            f"priority {value!r} is not one of high, normal, low", code="invalid_priority"
        )
    return key


def normalize_unsubscribe_url(value: str | None) -> str | None:
    """RFC 8058 one-click unsubscribe needs an https URL."""
    if value is None:
        return None
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
    fold("List-Unsubscribe", f"<{url}>")
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


def check_header_name(name: str) -> None:
    """A custom header's name: no control character, only RFC 5322 field-name characters."""
    check_header_text(name, field="header name")
    if not _FTEXT.fullmatch(name):
        raise MessageError(f"{name!r} is not a valid header name", code="invalid_header_name")


def normalize_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None, *, used: set[str]
) -> tuple[tuple[str, str], ...]:
    """Custom headers: valid names, safe values, nothing that overrides a library header."""
    result: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in _header_pairs(() if headers is None else headers):
        check_header_name(name)
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


@lru_cache(maxsize=256)  # one sender domain per mailer, as a rule: checked once, not per message
def _message_id_host(domain: str) -> str:
    try:
        host = idna_domain(domain)
    except UnicodeError:
        host = ""
    if not host or host.lower() == "localhost" or host.lower().endswith(".localhost"):
        host = "fluxmail.invalid"  # RFC 2606: reserved, never resolves
    return host


def make_message_id(domain: str) -> str:
    """A unique ``<id@domain>`` with the sender's IDNA domain (never the host's name)."""
    # os.urandom per id (~0.3 us): a per-process prefix and counter would save ~0.2 us but repeat
    # ids in children forked without Python's at-fork hooks (uWSGI's C-level prefork).
    return f"<{time.time_ns() // 1000:x}.{os.urandom(10).hex()}@{_message_id_host(domain)}>"
