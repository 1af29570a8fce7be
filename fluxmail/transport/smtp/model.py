"""Plain data for the SMTP transport: connection parameters, TLS facts, transaction results.

No network and no aiosmtplib here (``fluxmail.transport.smtp.session`` re-exports these names),
so configuration code can build ``SMTPParams`` without importing the wire machinery.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING

from fluxmail.config.ports import PORT_MAX, PORT_MIN, is_port
from fluxmail.config.tls import SECURITY_MODES, Security
from fluxmail.config.urls import is_loopback as is_loopback_host
from fluxmail.errors import ConfigurationError, Stage, TLSFailure
from fluxmail.results import ServerReply

if TYPE_CHECKING:
    import asyncio

    from fluxmail.transport.oauth.tokens import TokenSource

__all__ = [
    "SMTPParams",
    "Security",
    "TLSInfo",
    "TransactionResult",
    "certificate_error",
    "default_local_hostname",
    "ehlo_name",
    "is_loopback_host",
    "tls_info",
]

_BAD_HOST = re.compile(r"[\x00-\x20\x7f<>]")


@dataclass(frozen=True)
class SMTPParams:
    """Everything needed to reach one server; the password never appears in repr()."""

    host: str
    port: int
    security: Security
    ssl_context: ssl.SSLContext | None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    local_hostname: str | None = None
    connect_timeout: float = 30.0
    command_timeout: float = 30.0
    data_timeout: float = 600.0
    allow_insecure_auth: bool = False
    # "password" (PLAIN/LOGIN) or an OAuth mechanism, which logs in with token_source's tokens.
    auth: str = "password"
    token_source: TokenSource | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.host or _BAD_HOST.search(self.host):
            raise ConfigurationError(f"Invalid SMTP host {self.host!r}", field="host")
        if not is_port(self.port):
            raise ConfigurationError(
                f"SMTP port must be {PORT_MIN}-{PORT_MAX}, not {self.port}", field="port"
            )
        if self.security not in SECURITY_MODES:
            raise ConfigurationError(
                f"security must be starttls, implicit or none, not {self.security!r}"
            )
        for name in ("connect_timeout", "command_timeout", "data_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if self.auth not in ("password", "xoauth2", "oauthbearer"):
            raise ConfigurationError(
                f"auth must be password, xoauth2 or oauthbearer, not {self.auth!r}", field="auth"
            )
        if self.auth != "password" and self.token_source is None:
            raise ConfigurationError(
                f"auth={self.auth!r} needs a token_source (an OAuth token provider)",
                code="oauth_not_configured",
                field="auth",
            )
        if self.local_hostname is not None and ehlo_name(self.local_hostname) is None:
            raise ConfigurationError(
                f"Invalid EHLO name {self.local_hostname!r}", field="local_hostname"
            )


@dataclass(frozen=True)
class TLSInfo:
    """The negotiated TLS session and the server certificate (for ``fluxmail check``)."""

    version: str | None
    cipher: str | None
    peer_subject: str | None
    peer_issuer: str | None
    not_after: datetime | None


@dataclass(frozen=True)
class Staged:
    """A message a session will send next (its envelope and bytes), for cross-message pipelining."""

    sender: str
    recipients: Sequence[str]
    data: bytes
    smtputf8: bool = False


@dataclass(frozen=True)
class TransactionResult:
    """Every recipient's RCPT reply, and the reply to the final "." (None if DATA never ran)."""

    recipients: Mapping[str, ServerReply]
    data_reply: ServerReply | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipients", MappingProxyType(dict(self.recipients)))

    @property
    def accepted(self) -> tuple[str, ...]:
        return tuple(a for a, r in self.recipients.items() if 200 <= r.code < 300)

    @property
    def deferred(self) -> tuple[str, ...]:
        """4xx, and 552 to RCPT, which RFC 5321 4.5.3.1.10 says to treat as temporary."""
        return tuple(a for a, r in self.recipients.items() if 400 <= r.code < 500 or r.code == 552)

    @property
    def rejected(self) -> tuple[str, ...]:
        return tuple(a for a, r in self.recipients.items() if r.code >= 500 and r.code != 552)


@functools.lru_cache(maxsize=1)
def default_local_hostname() -> str:
    """socket.getfqdn(), made safe for EHLO; never needs a passwd entry (containers)."""
    try:
        name = ehlo_name(socket.getfqdn())
    except OSError:
        name = None
    return name or "localhost.localdomain"


def ehlo_name(name: str) -> str | None:
    """A valid EHLO argument: a domain, or an address literal (RFC 5321 4.1.3)."""
    name = name.strip().rstrip(".")
    if not name or not name.isascii() or any(c.isspace() or c in "\x7f<>" for c in name):
        return None
    if name.startswith("["):
        return name
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return name
    return f"[{ip}]" if ip.version == 4 else f"[IPv6:{ip}]"


def _dn(rdns: object) -> str | None:
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}
    if not isinstance(rdns, tuple):
        return None
    parts = [f"{short.get(k, k)}={v}" for rdn in rdns for k, v in rdn]
    return ", ".join(parts) or None


def tls_info(transport: asyncio.BaseTransport | None) -> TLSInfo | None:
    obj = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(obj, ssl.SSLObject):
        return None
    cert = obj.getpeercert() or {}
    expiry = cert.get("notAfter")
    not_after = None
    if isinstance(expiry, str):
        not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(expiry), tz=timezone.utc)
    cipher = obj.cipher()
    return TLSInfo(
        version=obj.version(),
        cipher=cipher[0] if cipher else None,
        peer_subject=_dn(cert.get("subject")),
        peer_issuer=_dn(cert.get("issuer")),
        not_after=not_after,
    )


def certificate_error(exc: ssl.SSLError, where: str, stage: Stage) -> TLSFailure:
    reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
    return TLSFailure(
        f"The TLS certificate of {where} was not accepted: {reason}. If the server uses a "
        "private CA, trust it (FLUXMAIL_CA_FILE); check that the host name matches the "
        "certificate and that it has not expired",
        code="certificate_error",
        stage=stage,
        verify_code=getattr(exc, "verify_code", None),
    )
