"""SMTP replies and events -> fluxmail errors (the table "What is retried" in docs/delivery.md).

Pure functions, no network and no aiosmtplib: the SMTP connection and session call them at each
stage. Every error carries its ``stage``, the reply code, the RFC 3463 enhanced status and the
reply text (with any echoed credentials removed). ``transient`` (may the caller retry?) is the
error class's kind; for an error built from a reply, ``transient_reply`` decides it.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from collections.abc import Mapping
from types import MappingProxyType

from fluxmail.errors import (
    STAGES,
    AuthenticationFailed,
    ConnectionFailed,
    DeliveryError,
    OutcomeUnknown,
    Refused,
    SendTimeout,
    Stage,
    TLSFailure,
)
from fluxmail.results import ServerReply
from fluxmail.transport.smtp.model import certificate_error

__all__ = [
    "STAGES",
    "connection_lost",
    "handshake_error",
    "insecure_auth",
    "parse_reply",
    "reply_error",
    "timed_out",
    "transient_reply",
    "wire_error",
    "with_replies",
]

# RFC 3463 section 2: class "." subject "." detail, at the start of the reply text.
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")

_WHAT: dict[Stage, str] = {
    "tls": "the TLS handshake",
    "greeting": "The server's greeting",
    "ehlo": "EHLO",
    "starttls": "STARTTLS",
    "auth": "Login",
    "mail": "The sender (MAIL FROM)",
    "data": "The DATA command",
    "end_of_data": "The message",
    "rset": "RSET",
    "noop": "NOOP",
}


@functools.lru_cache(maxsize=512)  # replies repeat on a bulk run; ServerReply is immutable
def parse_reply(code: int, text: str) -> ServerReply:
    """A ServerReply with the enhanced status code parsed out of the text (RFC 3463)."""
    match = _ENHANCED.match(text)
    enhanced = None
    if match is not None and match.group(1) == str(code)[0]:
        enhanced = ".".join(match.groups())
    return ServerReply(code=code, text=text, enhanced_status=enhanced)


def transient_reply(code: int) -> bool:
    """RFC 5321 4.2.1: a 4yz reply is a transient failure (the same command may succeed later),
    5yz a permanent one. 552 to RCPT is the one exception (``TransactionResult.deferred``)."""
    return 400 <= code < 500


def _err(
    cls: type[DeliveryError], msg: str, code: str, stage: Stage, reply: ServerReply
) -> DeliveryError:
    return cls(
        msg,
        code=code,
        transient=transient_reply(reply.code),
        smtp_code=reply.code,
        smtp_text=reply.text,
        enhanced_status=reply.enhanced_status,
        stage=stage,
    )


def reply_error(
    stage: Stage, reply: ServerReply, where: str, *, logged_in: bool = False
) -> DeliveryError:
    """The error for an unexpected reply at ``stage``; ``where`` is ``host:port``."""
    msg = f"{_WHAT.get(stage, stage)} failed at {where}: the server replied {reply}"
    temporary = transient_reply(reply.code)
    if stage == "auth":
        code, msg = _auth_error(reply, msg)
        return _err(AuthenticationFailed, msg, code, stage, reply)
    if reply.code == 530 and _LOGIN_WANTED.search(reply.text) and not _TLS.search(reply.text):
        msg += _NOT_LOGGED_IN if not logged_in else _LOGGED_IN
        return _err(AuthenticationFailed, msg, "auth_required", stage, reply)
    if reply.code == 421:
        # RFC 5321 3.8: the server is closing the connection; try again later.
        return _err(ConnectionFailed, msg, "service_unavailable", stage, reply)
    if stage == "starttls":
        return _err(TLSFailure, msg, "starttls_failed", stage, reply)
    if stage in ("greeting", "ehlo"):
        if temporary:
            return _err(ConnectionFailed, msg, "service_unavailable", stage, reply)
        return _err(Refused, msg, f"{stage}_refused", stage, reply)
    codes: dict[Stage, tuple[str, str]] = {
        "mail": ("sender_deferred", "sender_refused"),
        "data": ("data_deferred", "data_refused"),
        "end_of_data": ("message_deferred", "message_refused"),
    }
    if stage in codes:
        deferred, refused = codes[stage]
        if temporary:
            return _err(DeliveryError, msg, deferred, stage, reply)
        return _err(Refused, msg, refused, stage, reply)
    return _err(DeliveryError, msg, f"{stage}_failed", stage, reply)


# RFC 4954 section 6: "530 5.7.0 Authentication required" answers any command but AUTH, EHLO,
# HELO, NOOP, RSET or QUIT when a login is needed. Servers also send 530 for "issue STARTTLS
# first" (aiosmtpd, Postfix): that one is about TLS, not credentials.
_LOGIN_WANTED = re.compile(r"auth", re.IGNORECASE)
_TLS = re.compile(r"\bstarttls\b|\btls\b", re.IGNORECASE)
_NOT_LOGGED_IN = (
    "; the server requires a login (SMTP AUTH) and no credentials are configured: set "
    "FLUXMAIL_USERNAME and FLUXMAIL_PASSWORD, or FLUXMAIL_PROVIDER for a known provider"
)
_LOGGED_IN = "; the server asks for a login although fluxmail logged in: check the account"


def _auth_error(reply: ServerReply, msg: str) -> tuple[str, str]:
    """RFC 4954 section 6: 535 bad credentials, 530/538 TLS needed, 534 too weak, 4xx later."""
    if transient_reply(reply.code):
        return "auth_deferred", msg
    if reply.code in (530, 538):
        hint = "; the server requires TLS (or a stronger mechanism) before login"
        return "auth_requires_tls", msg + hint
    if reply.code == 534:
        return "auth_mechanism_too_weak", msg
    if reply.code == 504:
        return "auth_unsupported", msg
    hint = "; check the username and password" if reply.code == 535 else ""
    return "auth_failed", msg + hint


def connection_lost(stage: Stage, where: str, *, after_dot: bool) -> DeliveryError:
    """Before the final "." a lost connection is retryable; after it the outcome is unknown."""
    if after_dot:
        return OutcomeUnknown(
            f"The connection to {where} was lost after the message was sent and before the "
            "server confirmed it; it may or may not have been accepted (not resent)",
            code="outcome_unknown",
            stage=stage,
        )
    return ConnectionFailed(
        f"The connection to {where} was lost during {_WHAT.get(stage, stage)}",
        code="connection_lost",
        stage=stage,
    )


def timed_out(stage: Stage, where: str, seconds: float, *, after_dot: bool) -> DeliveryError:
    """No answer in time: before the final "." retryable, after it (RFC 5321 4.5.3.2) unknown."""
    if after_dot:
        return OutcomeUnknown(
            f"{where} did not confirm the message within {seconds:g} s after it was sent; it "
            "may or may not have been accepted (not resent)",
            code="outcome_unknown",
            stage=stage,
        )
    return SendTimeout(
        f"{where} did not answer within {seconds:g} s ({_WHAT.get(stage, stage)})",
        code="timeout",
        stage=stage,
    )


def wire_error(
    exc: BaseException, stage: Stage, where: str, seconds: float, *, after_dot: bool
) -> DeliveryError:
    """A timeout, TLS failure, socket error or garbled reply at ``stage``, as a fluxmail error."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):  # distinct types before 3.11
        return timed_out(stage, where, seconds, after_dot=after_dot)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return certificate_error(exc, where, stage)
    if isinstance(exc, ssl.SSLError):
        return TLSFailure(
            f"TLS with {where} failed: {exc.reason or exc}",
            code="tls_handshake_failed",
            stage=stage,
        )
    if stage == "connect" and isinstance(exc, OSError):
        return ConnectionFailed(
            f"Could not connect to {where}: {exc}",
            code="connection_failed",
            stage=stage,
        )
    return connection_lost(stage, where, after_dot=after_dot)


# OpenSSL's reasons for "no TLS version in common": the server refused every version offered
# (protocol_version alert) or answered with one below the client's minimum.
_VERSION_REFUSED = frozenset(
    {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "VERSION_TOO_LOW"}
)
_VERSION_NAMES = {
    ssl.TLSVersion.TLSv1: "1.0",
    ssl.TLSVersion.TLSv1_1: "1.1",
    ssl.TLSVersion.TLSv1_2: "1.2",
    ssl.TLSVersion.TLSv1_3: "1.3",
}


def handshake_error(
    exc: BaseException, stage: Stage, where: str, seconds: float, context: ssl.SSLContext
) -> DeliveryError:
    """The TLS handshake on an open connection failed: never transient but for a timeout.

    The TCP connection was up, so a reset here is the server refusing the handshake, not the
    network: retrying would meet the same refusal.
    """
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return timed_out(stage, where, seconds, after_dot=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return certificate_error(exc, where, stage)
    floor = _VERSION_NAMES.get(context.minimum_version, "1.2")
    requires = f"fluxmail requires TLS >= {floor} (RFC 8996 retires TLS 1.0 and 1.1)"
    reason = getattr(exc, "reason", None)
    if reason in _VERSION_REFUSED:
        why = (
            f"the server offers only TLS versions older than {floor} (it refused TLS {floor} "
            f"and newer: {reason}); {requires}. Its operator must enable TLS 1.2 or 1.3"
        )
    elif isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
        why = str(exc.reason or exc)
    else:  # asyncio-based servers close without sending their TLS alert
        why = (
            f"the server closed the connection during the handshake without a TLS alert, after "
            f"fluxmail offered TLS {floor} and newer: most likely it offers only older versions "
            f"(TLS 1.0/1.1) or no cipher in common, and {requires}"
        )
    return TLSFailure(f"TLS with {where} failed: {why}", code="tls_handshake_failed", stage=stage)


def insecure_auth(where: str) -> DeliveryError:
    """Credentials would cross the network in plaintext: refused before they are sent."""
    return AuthenticationFailed(
        f"Refusing to send credentials to {where} over an unencrypted connection; use "
        "STARTTLS or implicit TLS (or allow insecure auth explicitly)",
        code="insecure_auth",
        stage="auth",
    )


def with_replies(exc: DeliveryError, replies: Mapping[str, ServerReply]) -> DeliveryError:
    """Attach the RCPT replies, so the caller knows which recipients a failure concerns."""
    exc.details["recipients"] = MappingProxyType(dict(replies))
    return exc
