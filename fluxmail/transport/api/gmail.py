"""The Gmail API: ``users.messages.send`` with the whole message, OAuth 2.0 bearer tokens.

API reference: https://developers.google.com/gmail/api/reference/rest/v1/users.messages/send
(``POST /gmail/v1/users/{userId}/messages/send`` with ``{"raw": base64url}``; the reply is the
Message resource, its ``id`` is the provider message id) and ``users.getProfile`` for ``fluxmail
check``. Tokens come from the OAuth settings (``FLUXMAIL_OAUTH_*`` or ``token_provider=``).

Gmail takes the recipients from the headers, so it is sent a transient copy of the audited bytes
with a ``Bcc`` header added for delivery (Gmail removes it from what recipients see); the stored
snapshot stays Bcc-free and no Bcc recipient is dropped. A 401 (the token expired or was revoked)
invalidates the token and sends once more with a fresh one: a refused request delivered nothing.
A 403 whose reason is ``rateLimitExceeded`` or ``userRateLimitExceeded`` is a rate limit, not a
refused token (https://developers.google.com/gmail/api/guides/handle-errors): retried with
backoff like a 429.
"""

from __future__ import annotations

import base64
import contextvars
import dataclasses
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote

from fluxmail.config.model import is_address
from fluxmail.errors import AuthenticationFailed, ConfigurationError
from fluxmail.transport.api.base import ApiReply, ApiRequest, ApiTransport
from fluxmail.transport.api.outcomes import Kind
from fluxmail.transport.mail import Mail, TransportResult
from fluxmail.transport.oauth.tokens import Token, TokenSource, token_source

if TYPE_CHECKING:
    from fluxmail.config.model import Config

__all__ = ["TRANSPORT", "GmailTransport", "delivery_copy"]

RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})

# The tokens one send used, in order (a list, so sign() can add to it from any context copy).
_USED: contextvars.ContextVar[list[Token] | None] = contextvars.ContextVar(
    "gmail_tokens", default=None
)


def delivery_copy(mail: Mail) -> bytes:
    """The audited bytes with a ``Bcc`` header naming every Bcc recipient not in To or Cc."""
    message = mail.message
    shown = {a.addr.casefold() for a in (*message.to, *message.cc)}
    hidden = [a for a in message.bcc if a.addr.casefold() not in shown]
    if not hidden:
        return mail.data
    # Folded after each comma (RFC 5322 2.2.3), so no line nears 998 octets; the header forms
    # are the writer's own (RFC 2047 names, IDNA domains). Header order carries no meaning.
    value = ",\r\n ".join(a.header_value() for a in hidden)
    return b"Bcc: " + value.encode("utf-8") + b"\r\n" + mail.data


class GmailTransport(ApiTransport):
    """users.messages.send for the account the OAuth token belongs to."""

    name: ClassVar[str] = "gmail"
    default_base_url: ClassVar[str] = "https://gmail.googleapis.com"
    requires_key: ClassVar[bool] = False  # OAuth tokens, not a key

    def __init__(self, config: Config) -> None:
        source = token_source(config)
        if source is None:
            raise ConfigurationError(
                "the Gmail API needs OAuth 2.0 tokens: set FLUXMAIL_OAUTH_PROVIDER=google with a "
                "refresh token or a service account (docs/oauth.md), or pass token_provider=",
                code="oauth_not_configured",
            )
        self.tokens: TokenSource = source
        self.user = _user(config)
        self._prefix = f"/gmail/v1/users/{quote(self.user, safe='@')}"
        super().__init__(config)

    def request(self, mail: Mail, idempotency_key: str | None) -> ApiRequest:
        raw = base64.urlsafe_b64encode(delivery_copy(mail)).decode("ascii")
        return ApiRequest("POST", f"{self._prefix}/messages/send", json={"raw": raw})

    def message_id(self, mail: Mail, reply: ApiReply) -> str | None:
        data = reply.json()
        value = data.get("id") if isinstance(data, dict) else None
        return value if isinstance(value, str) and value else None

    def classify(self, reply: ApiReply) -> Kind | None:
        """A 403 (or 429) naming a rate-limit reason is a rate limit, whatever its status."""
        return "rate_limited" if RATE_LIMIT_REASONS & set(_reasons(reply)) else None

    def error_text(self, reply: ApiReply) -> str:
        """Google's error body: ``{"error": {"code", "message", "status", "errors": [...]}}``."""
        data = reply.json()
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            status, text = error.get("status"), error.get("message")
            reasons = _reasons(reply)
            parts = [str(p) for p in (status, text) if p]
            if reasons:
                parts.append(f"({reasons[0]})")
            if parts:
                return " ".join(parts)
        text = reply.body[:300].decode("utf-8", "replace").strip()
        return text or f"HTTP {reply.status}"

    async def sign(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> dict[str, str]:
        token = await self.tokens.token()
        used = _USED.get()
        if used is not None:
            used.append(token)
        if token.value not in self.secrets:
            # Tokens rotate hourly: keep redacting the current one and a few before it.
            self.secrets = (token.value, *self.secrets)[:4]
        return {"Authorization": f"Bearer {token.value}"}

    async def send(self, mail: Mail) -> TransportResult:
        """One send; a refused token (401) gets one fresh token and one more send, never a loop."""
        used: list[Token] = []
        marker = _USED.set(used)
        try:
            first = await super().send(mail)
            if not (_refused(first) and used):
                return first
            self.tokens.invalidate(used[-1])
            second = await super().send(mail)
        finally:
            _USED.reset(marker)
        return _joined(first, second)

    async def probe(self) -> str:
        """users.getProfile: proves the token and names the account it belongs to."""
        reply = await self.call(ApiRequest("GET", f"{self._prefix}/profile"))
        if reply.status == 403 and b"insufficient" in reply.body.lower():
            # A token with only the gmail.send scope may send but not read the profile.
            return (
                "Gmail API: token accepted (its scope cannot read the profile; sending is allowed)"
            )
        if not 200 <= reply.status < 300:
            raise self.refused_probe(reply)
        data = reply.json()
        address = data.get("emailAddress") if isinstance(data, dict) else None
        return f"Gmail API: authorized as {address or 'an unnamed account'}"


def _user(config: Config) -> str:
    """The URL's address (``gmail+api://user@example.com``), else ``me``: the token's owner."""
    for value in (config.api_options.get("user"), config.username):
        if value and is_address(value):
            return str(value)
    return "me"


def _refused(result: TransportResult) -> bool:
    reply = result.final_reply
    # Only Gmail's own 401: a token endpoint's refusal (no reply) is not cured by asking again.
    refused = isinstance(result.error, AuthenticationFailed)
    return refused and reply is not None and reply.code == 401


def _joined(first: TransportResult, second: TransportResult) -> TransportResult:
    """The second result, with the first attempt kept in the history (numbered in order)."""
    attempts = [*first.attempts, *second.attempts]
    numbered = tuple(dataclasses.replace(a, number=i) for i, a in enumerate(attempts, 1))
    return dataclasses.replace(second, attempts=numbered, elapsed=first.elapsed + second.elapsed)


def _reasons(reply: ApiReply) -> list[str]:
    """The ``reason`` of each of Google's ``error.errors[]`` entries."""
    data = reply.json()
    error = data.get("error") if isinstance(data, dict) else None
    found = error.get("errors") if isinstance(error, dict) else None
    if not isinstance(found, list):
        return []
    return [str(e["reason"]) for e in found if isinstance(e, dict) and e.get("reason")]


TRANSPORT = GmailTransport
