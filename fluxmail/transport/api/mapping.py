"""Helpers for the JSON APIs, which rebuild the message from its fields (not from its bytes).

:func:`headers` lists every header the MIME writer (fluxmail.message.mime) would put on the
message besides the ones each API has a field for (From, To, Cc, Reply-To, Subject, Date,
MIME-Version, Content-*), in the same order and spelling: Message-ID, In-Reply-To, References,
the priority pair, List-Unsubscribe with its RFC 8058 one-click companion, then the custom
headers. So a JSON API carries what the audit's snapshot shows.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence

from fluxmail.errors import MessageError
from fluxmail.message.addresses import Address
from fluxmail.message.headers import PRIORITY
from fluxmail.message.model import Message

__all__ = [
    "b64",
    "content_id",
    "email",
    "formatted",
    "headers",
    "limit",
    "single_headers",
    "unique",
    "unsupported",
]

_SPECIALS = set('()<>[]:;@\\,."')


def email(address: Address) -> str:
    """The address as the API is to deliver to: an IDNA domain unless the local part needs
    SMTPUTF8 (RFC 6531), as the SMTP envelope has it."""
    return address.envelope(smtputf8=address.needs_smtputf8)


def formatted(address: Address) -> str:
    """``Name <addr>`` (the name quoted when it holds a special), or the bare address."""
    if not address.name:
        return email(address)
    name = address.name
    if _SPECIALS & set(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{email(address)}>"


def headers(message: Message) -> list[tuple[str, str]]:
    """Every header the JSON APIs carry as "custom headers", as the MIME writer orders them."""
    found: list[tuple[str, str]] = [("Message-ID", message.message_id)]
    if message.in_reply_to:
        found.append(("In-Reply-To", message.in_reply_to))
    if message.references:
        found.append(("References", " ".join(message.references)))
    if message.priority is not None:
        x_priority, importance = PRIORITY[message.priority]
        found += [("X-Priority", x_priority), ("Importance", importance)]
    if message.unsubscribe_url is not None:
        found.append(("List-Unsubscribe", f"<{message.unsubscribe_url}>"))
        found.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))  # RFC 8058 §3.1
    found.extend(message.headers)
    return found


def single_headers(provider: str, message: Message) -> dict[str, str]:
    """:func:`headers` as a JSON object, which cannot hold one name twice: refused then."""
    result: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers(message):
        if name.lower() in seen:
            raise unsupported(
                provider, f"the header {name!r} twice (its API takes headers as a JSON object)"
            )
        seen.add(name.lower())
        result[name] = value
    return result


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def content_id(cid: str | None) -> str:
    """A Content-ID without its angle brackets (what ``cid:`` URLs in the HTML name)."""
    return (cid or "").strip("<>")


def unsupported(provider: str, what: str) -> MessageError:
    """A field the provider's API cannot carry: refused before any request, never dropped."""
    return MessageError(
        f"the {provider} API cannot carry {what}; nothing was sent. Send this message over "
        f"SMTP (unset FLUXMAIL_TRANSPORT) or change it",
        code="api_unsupported",
    )


def limit(provider: str, addresses: Sequence[Address], most: int, what: str) -> None:
    if len(addresses) > most:
        raise unsupported(provider, f"more than {most} {what} ({len(addresses)})")


def unique(provider: str, groups: Iterable[Sequence[Address]]) -> None:
    """Refuse an address given twice across To, Cc and Bcc (the API would refuse it)."""
    seen: set[str] = set()
    for group in groups:
        for address in group:
            key = email(address).lower()
            if key in seen:
                raise unsupported(provider, f"the same recipient twice ({address.addr})")
            seen.add(key)
