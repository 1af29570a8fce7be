"""Strict e-mail address parsing and rendering (envelope and header forms).

Accepted forms: ``"local@domain"``, ``'"Name" <local@domain>'``, ``"Name <local@domain>"``,
``(name, addr)`` tuples and :class:`Address` objects. One string is one address: a comma list
is ambiguous (quoted names may hold commas) and is refused, pass a list instead.

The grammar is deliberately narrower than RFC 5322: a dot-atom local part (UTF-8 allowed,
RFC 6531), a host-name domain (UTF-8 labels allowed), no quoted local parts, no domain literals,
no comments, no group syntax. Everything parsed is cross-checked against
``email.utils.parseaddr``: an address the standard library would read as a different one is an
error (CVE-2023-27043), never silently rewritten.

Domains go on the wire in their ASCII form unless the server offers SMTPUTF8: IDNA 2008 with
the UTS #46 mapping (``faß.de`` is ``xn--fa-hia.de``), by
:func:`~fluxmail.message.domains.idna_domain`, the one conversion that addresses, Message-IDs
and the configured host all use.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Union

from fluxmail._frozen import Frozen
from fluxmail._lazy import lazy_pattern
from fluxmail.errors import MessageError
from fluxmail.message.domains import idna_domain

__all__ = [
    "Address",
    "AddressInput",
    "check_header_text",
    "encode_words",
    "idna_domain",
    "parse_address",
    "parse_addresses",
]

AddressInput = Union[str, tuple[str, str], "Address"]

# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: anything that
# str.splitlines() or a mail parser could treat as a line break (SMTP smuggling, header injection),
# and lone surrogates, which cannot be encoded.
# Compiled by the first check, not at import: this class is slow to compile.
_FORBIDDEN = lazy_pattern("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# The classes below are written as "not these ASCII characters": the same sets as
# [A-Za-z0-9...\u0080-\U0010ffff] (checked code point by code point), but a range up to
# U+10FFFF takes re ~30 ms to compile, a negated ASCII class well under 1 ms (cold start).
# atext (RFC 5322 §3.2.3) plus every non-ASCII character (RFC 6532 §3.2):
_ATEXT = r"""[^\x00-\x20\x7f"(),.:;<>@\[\\\]]"""
_LOCAL = lazy_pattern(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_ALNUM = r"[^\x00-\x2f:-@\[-`{-\x7f]"  # letters, digits, non-ASCII
_ALNUM_HYPHEN = r"[^\x00-\x2c./:-@\[-`{-\x7f]"  # the same and "-"
_LABEL = rf"(?:{_ALNUM}(?:{_ALNUM_HYPHEN}*{_ALNUM})?)"
_DOMAIN = lazy_pattern(rf"{_LABEL}(?:\.{_LABEL})*")
# A display name that may go unquoted: atoms separated by single spaces (RFC 5322 §3.2.5).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+"
_BARE_PHRASE = lazy_pattern(rf"{_ATOM}(?: {_ATOM})*")
_UNQUOTED_NAME = lazy_pattern(rf"(?:{_ATEXT}|[ .])*")
_QUOTED_NAME = lazy_pattern(r'"((?:[^"\\]|\\.)*)"')
_UNESCAPE = lazy_pattern(r"\\(.)")
_EW_CHUNK = 42  # bytes per encoded word: 56 base64 chars + 12 = 68 <= 75 (RFC 2047 §2)


def check_header_text(value: str, *, field: str) -> None:
    """Refuse control and line-breaking characters (header injection, RFC 5322 §2.2)."""
    match = _FORBIDDEN().search(value)
    if match is not None:
        raise MessageError(
            f"{field} contains a control or line-breaking character "
            f"(U+{ord(match.group()):04X}); it could inject headers",
            code="header_injection",
            field=field,
        )


def encode_words(text: str) -> str:
    """RFC 2047 'B' encoded words for ``text``, split on character boundaries, space-joined."""
    words: list[str] = []
    chunk: list[bytes] = []
    size = 0
    for char in text:
        data = char.encode("utf-8")
        if size + len(data) > _EW_CHUNK:
            words.append(base64.b64encode(b"".join(chunk)).decode("ascii"))
            chunk, size = [], 0
        chunk.append(data)
        size += len(data)
    if chunk:
        words.append(base64.b64encode(b"".join(chunk)).decode("ascii"))
    return " ".join(f"=?utf-8?b?{word}?=" for word in words)


def _idna(domain: str, *, field: str) -> str:
    if domain.isascii():
        return domain
    try:
        return idna_domain(domain)
    except UnicodeError as exc:
        raise MessageError(
            f"{field}: the domain {domain!r} cannot be encoded as IDNA ({exc})",
            code="invalid_address",
            field=field,
        ) from exc


def _plain_ascii(addr: str) -> bool:
    """ASCII with an "@": ``local@domain`` is unchanged by the IDNA conversion."""
    return addr.isascii() and "@" in addr


# init=False, eq=False, repr=False and Frozen instead of frozen=True: the methods below are what
# dataclass would generate, written out because it compiles each from source when the class is
# made, on every cold start.
@dataclass(init=False, eq=False, repr=False)
class Address(Frozen):
    """One mailbox: ``addr`` as given (``local@domain``, Unicode allowed) and a display name."""

    addr: str
    name: str = ""

    def __init__(self, addr: str, name: str = "") -> None:
        object.__setattr__(self, "addr", addr)
        object.__setattr__(self, "name", name)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.addr, self.name) == (other.addr, other.name)

    def __hash__(self) -> int:
        return hash((self.addr, self.name))

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}(addr={self.addr!r}, name={self.name!r})"

    # Cached: a bulk run asks each address these several times per message.
    @cached_property
    def local(self) -> str:
        return self.addr.rpartition("@")[0]

    @cached_property
    def domain(self) -> str:
        return self.addr.rpartition("@")[2]

    @cached_property
    def needs_smtputf8(self) -> bool:
        """A non-ASCII local part cannot be downgraded: it needs SMTPUTF8 (RFC 6531)."""
        return not self.local.isascii()

    def envelope(self, *, smtputf8: bool) -> str:
        """The MAIL FROM / RCPT TO form: IDNA domain unless the server speaks SMTPUTF8."""
        if smtputf8 or _plain_ascii(self.addr):
            return self.addr  # an ASCII local@domain is its own IDNA form
        if self.needs_smtputf8:
            raise MessageError(
                f"{self.addr!r} has a non-ASCII local part; the server does not offer SMTPUTF8",
                code="smtputf8_required",
            )
        return f"{self.local}@{_idna(self.domain, field='address')}"

    def header_value(self) -> str:
        """The header form: RFC 2047 / quoted display name, IDNA domain for ASCII local parts."""
        plain = _plain_ascii(self.addr) or self.needs_smtputf8
        addr = self.addr if plain else self.envelope(smtputf8=False)
        if not self.name:
            return addr
        return f"{_display_name(self.name)} <{addr}>"

    def __str__(self) -> str:
        return self.header_value()


def _display_name(name: str) -> str:
    if _BARE_PHRASE().fullmatch(name) and "=?" not in name:
        return name
    longest = max((len(word) for word in name.split()), default=0)
    if name.isascii() and "=?" not in name and longest <= 60:
        # Quoted string (RFC 5322 §3.2.4); short words keep it foldable at spaces.
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return encode_words(name)


def _invalid(value: object, field: str, why: str) -> MessageError:
    return MessageError(
        f"{field}: {value!r} is not a valid address ({why})", code="invalid_address"
    )


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _check_addr(addr: str, field: str) -> None:
    local, at, domain = addr.rpartition("@")
    if not at or not _LOCAL().fullmatch(local) or not _DOMAIN().fullmatch(domain):
        raise _invalid(addr, field, "expected local@domain")
    _check_lengths(addr, local, domain, field)


def _check_lengths(addr: str, local: str, domain: str, field: str) -> None:
    # RFC 5321 §4.5.3.1.1 / §4.5.3.1.3: 64 octets of local part, 254 for the path.
    if _octets(local) > 64 or _octets(addr) > 254:
        raise _invalid(addr, field, "too long")
    # RFC 1035 §2.3.4: 63 octets per label, 253 for the name (checked on the IDNA form).
    wire = _idna(domain, field=field)
    if len(wire) > 253 or (len(wire) > 63 and max(map(len, wire.split("."))) > 63):
        raise _invalid(addr, field, "domain too long")


def _is_bare_address(value: str) -> bool:
    local, at, domain = value.strip().rpartition("@")
    return bool(at) and bool(_LOCAL().fullmatch(local)) and bool(_DOMAIN().fullmatch(domain))


def _split(value: str, field: str) -> tuple[str, str]:
    text = value.strip()
    if not text.endswith(">"):
        return "", text
    head, lt, addr = text[:-1].rpartition("<")
    if not lt:
        raise _invalid(value, field, "unbalanced angle brackets")
    head = head.strip()
    quoted = _QUOTED_NAME().fullmatch(head)
    if quoted is not None:
        return _UNESCAPE().sub(r"\1", quoted.group(1)).strip(), addr
    if not _UNQUOTED_NAME().fullmatch(head):
        raise _invalid(value, field, "quote a display name that contains special characters")
    return " ".join(head.split()), addr


# A bare ASCII dot-atom address: nothing a parser could read two ways, so the cross-check
# below is skipped (bulk sends parse thousands of distinct addresses). It is _LOCAL "@"
# _DOMAIN in ASCII, so a match leaves only the lengths to check.
_PLAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    rf"@{_PLAIN_LABEL}(?:\.{_PLAIN_LABEL})*"
)


@lru_cache(maxsize=1024)
def _parse_string(value: str, field: str) -> Address:
    if _PLAIN_ADDRESS.fullmatch(value):
        local, _, domain = value.rpartition("@")
        _check_lengths(value, local, domain, field)
        return Address(addr=value)
    check_header_text(value, field=field)
    name, addr = _split(value, field)
    _check_addr(addr, field)
    # CVE-2023-27043: what the standard library reads must be exactly what we read.
    from email.utils import parseaddr

    std_name, std_addr = parseaddr(value)
    if std_addr != addr or " ".join(std_name.split()) != " ".join(name.split()):
        raise _invalid(value, field, "ambiguous: it could be read as another address")
    return Address(addr=addr, name=name)


def parse_address(value: AddressInput, *, field: str) -> Address:
    """Parse one address given as a string, a ``(name, addr)`` tuple or an :class:`Address`."""
    if isinstance(value, str):
        return _parse_string(value, field)
    if isinstance(value, Address):
        name, addr = value.name, value.addr
    elif isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
        name, addr = value
    else:
        raise _invalid(value, field, "expected a string, a (name, addr) tuple or an Address")
    check_header_text(name, field=field)
    check_header_text(addr, field=field)
    _check_addr(addr, field)
    return Address(addr=addr, name=name.strip())


def parse_addresses(
    value: AddressInput | Iterable[AddressInput] | None, *, field: str
) -> tuple[Address, ...]:
    """Parse ``None``, one address, or an iterable of addresses into a tuple."""
    if value is None:
        return ()
    if type(value) is list:  # the common form, and no str, Address or (name, addr) pair
        return tuple([parse_address(item, field=field) for item in value])
    if isinstance(value, (str, Address)):
        return (parse_address(value, field=field),)
    if isinstance(value, tuple) and len(value) == 2:
        name, addr = value
        if isinstance(name, str) and isinstance(addr, str):
            if _is_bare_address(name) and _is_bare_address(addr):
                why = "ambiguous: a (name, addr) pair or two addresses? use a list"
                raise _invalid(value, field, why)
            return (parse_address((name, addr), field=field),)
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, Iterable):
        raise _invalid(value, field, "expected an address or a list of addresses")
    return tuple(parse_address(item, field=field) for item in value)
