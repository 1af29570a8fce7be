"""The composite URL form: several servers behind one ``FLUXMAIL_URL``.

::

    failover(smtp://u:p@a.example:587 smtps://u:p@b.example:465)
    roundrobin(smtps://u:p@a.example smtps://u:p@b.example)
    failover(roundrobin(smtps://a.example smtps://b.example) smtp://c.example:587)

Members are separated by whitespace; each is a full URL with its own credentials (percent-encode
spaces and parentheses in them), or a nested ``failover(...)`` / ``roundrobin(...)``. A member
may also be ``memory://``, ``console://`` or ``file:///path/to/outbox``. The form is the
convention of Symfony Mailer's DSNs. Errors name a member by position, never by its text: it
holds a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Union
from urllib.parse import unquote, urlsplit

from fluxmail._lazy import lazy_pattern
from fluxmail.errors import ConfigurationError

if TYPE_CHECKING:
    from fluxmail.config.model import Config

__all__ = [
    "KINDS",
    "Composite",
    "Kind",
    "is_composite",
    "member_settings",
    "member_urls",
    "parse_composite",
]

Kind = Literal["failover", "roundrobin"]
KINDS: tuple[Kind, ...] = ("failover", "roundrobin")
MAX_DEPTH = 8  # nesting deeper than this is a mistake, and it keeps the parser bounded
_OPEN = lazy_pattern(r"(failover|roundrobin)\s*\(", re.IGNORECASE)
_SCHEME = lazy_pattern(r"^[A-Za-z][A-Za-z0-9+.-]*://")
LOCAL_SCHEMES = ("memory", "console", "file")

Member = Union[str, "Composite", "Config"]


@dataclass(frozen=True)
class Composite:
    """``failover(...)`` or ``roundrobin(...)``: members are URLs, nested composites, or (from
    Python, ``FluxMail.failover(mailer, ...)``) resolved configurations."""

    kind: Kind
    members: tuple[Member, ...]

    def __repr__(self) -> str:  # members may be URLs with passwords
        return f"Composite({self.kind}, {len(self.members)} members)"


def is_composite(text: str) -> bool:
    """Does ``text`` use the composite form (``failover(`` or ``roundrobin(`` first)?"""
    return _OPEN().match(text.strip()) is not None


def _error(problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"FLUXMAIL_URL / failover() / roundrobin() is malformed: {problem}. Expected "
        "failover(URL URL ...) or roundrobin(URL URL ...), members separated by spaces, each a "
        "full URL such as smtps://user:pass@host:465 (percent-encode spaces and parentheses)",
        code="invalid_composite_url",
    )


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.count = 0  # members seen so far, to name a bad one by position

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def group(self, depth: int) -> Composite:
        match = _OPEN().match(self.text, self.pos)
        assert match is not None
        if depth > MAX_DEPTH:
            raise _error(f"composites are nested more than {MAX_DEPTH} deep")
        kind: Kind = "failover" if match.group(1).lower() == "failover" else "roundrobin"
        self.pos = match.end()
        members: list[Member] = []
        while True:
            self.skip()
            if self.pos >= len(self.text):
                raise _error(f"{kind}( is not closed: a ')' is missing")
            if self.text[self.pos] == ")":
                self.pos += 1
                break
            members.append(self.member(depth))
        if not members:
            raise _error(f"{kind}() has no members")
        return Composite(kind, tuple(members))

    def member(self, depth: int) -> Member:
        if _OPEN().match(self.text, self.pos):
            return self.group(depth + 1)
        start = self.pos
        while self.pos < len(self.text) and not (
            self.text[self.pos].isspace() or self.text[self.pos] in "()"
        ):
            self.pos += 1
        self.count += 1
        token = self.text[start : self.pos]
        if self.pos < len(self.text) and self.text[self.pos] == "(":
            raise _error(f"member {self.count} contains '(' (only failover( and roundrobin( open)")
        if not _SCHEME().match(token):
            raise _error(f"member {self.count} is not a URL (it must start with a scheme://)")
        return token


def parse_composite(text: str) -> Composite:
    """Parse the composite form; raises ``invalid_composite_url`` without echoing the text."""
    parser = _Parser(text.strip())
    if not _OPEN().match(parser.text):
        raise _error("it must start with failover( or roundrobin(")
    found = parser.group(1)
    parser.skip()
    if parser.pos != len(parser.text):
        extra = "an unmatched ')'" if parser.text[parser.pos] == ")" else "text"
        raise _error(f"{extra} follows the closing ')'; put every member inside the parentheses")
    return found


def member_urls(text: str) -> list[str]:
    """Every member URL of a composite, leniently (for redaction: never raises)."""
    tokens = re.split(r"[\s()]+", text)
    return [t for t in tokens if _SCHEME().match(t)]


def member_settings(url: str) -> dict[str, object]:
    """The settings one member URL gives: a local transport by scheme, else the URL itself."""
    scheme = url.partition("://")[0].lower()
    if scheme not in LOCAL_SCHEMES:
        return {"url": url}
    if scheme != "file":
        if url.partition("://")[2].strip("/"):
            raise _error(f"{scheme}:// takes nothing after the scheme")
        return {"object_type": scheme}
    parts = urlsplit(url)
    path = unquote(parts.netloc + parts.path)
    return {"object_type": "file", "file_dir": path} if path else {"object_type": "file"}
