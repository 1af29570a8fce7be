"""SASL for OAuth 2.0 bearer tokens: XOAUTH2 and OAUTHBEARER (RFC 7628). Pure functions.

The initial response carries the access token: the connection passes both its raw and base64
forms to ``_command(secrets=...)``, so neither can reach an error message or a log. A server
that refuses the token first sends a 334 challenge holding a base64 JSON error (RFC 7628 3.2.2,
Google's XOAUTH2 protocol page); the client answers it (``ERROR_ANSWER``) and then gets the
final 5xx/4xx reply.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from fluxmail.errors import AuthenticationFailed, DeliveryError
from fluxmail.results import ServerReply

__all__ = [
    "ERROR_ANSWER",
    "MECHANISMS",
    "NO_CHALLENGE",
    "error_challenge",
    "initial_response",
    "refused",
    "token_refused",
    "unsupported",
]

MECHANISMS = {"xoauth2": "XOAUTH2", "oauthbearer": "OAUTHBEARER"}
NO_CHALLENGE: Mapping[str, str] = MappingProxyType({})

# The answer to an error challenge: RFC 7628 3.2.3 asks OAUTHBEARER clients for a single %x01;
# Google's XOAUTH2 page asks for an empty response.
ERROR_ANSWER = {"xoauth2": b"", "oauthbearer": base64.b64encode(b"\x01")}

# RFC 6750 2.1 b64token, widened to any visible ASCII: a token never holds a space or a control
# character, which would break out of the SASL message (\x01 separates its fields).
_TOKEN = re.compile(r"^[\x21-\x7e]+$")
_FORBIDDEN_IN_USER = re.compile(r"[\x00-\x1f\x7f]")


def _check(user: str, token: str) -> None:
    if not _TOKEN.match(token):
        raise AuthenticationFailed(
            "the OAuth access token holds a space or a control character; a bearer token is "
            "printable ASCII (RFC 6750 2.1): check what the token provider returns",
            code="token_provider_invalid",
            stage="auth",
        )
    if not user or _FORBIDDEN_IN_USER.search(user):
        raise AuthenticationFailed(
            "an OAuth login needs the mailbox address as FLUXMAIL_USERNAME, without control "
            "characters",
            code="credentials_incomplete",
            stage="auth",
        )


def _saslname(user: str) -> str:
    """RFC 5801 4 (used by RFC 7628 3.1): "," and "=" in the authzid are escaped."""
    return user.replace("=", "=3D").replace(",", "=2C")


def initial_response(mechanism: str, user: str, token: str) -> tuple[bytes, bytes]:
    """(raw, base64) initial response of ``mechanism`` for ``user`` with ``token``."""
    _check(user, token)
    if mechanism == "xoauth2":  # Google's and Microsoft's XOAUTH2 format
        raw = f"user={user}\x01auth=Bearer {token}\x01\x01"
    else:  # RFC 7628 3.1: gs2-header, then key=value pairs separated by %x01
        raw = f"n,a={_saslname(user)},\x01auth=Bearer {token}\x01\x01"
    data = raw.encode("utf-8")
    return data, base64.b64encode(data)


def error_challenge(text: str) -> Mapping[str, str]:
    """The JSON error a 334 challenge carries (``status``, ``scope``, ...); {} if unreadable."""
    try:
        decoded = json.loads(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError):
        return NO_CHALLENGE
    if not isinstance(decoded, dict):
        return NO_CHALLENGE
    return MappingProxyType({str(k): str(v) for k, v in decoded.items()})


# Replies that mean "this token is no good" rather than "this account may not log in": RFC 4954
# 535 (credentials invalid) and 454 4.7.0 (temporary failure, also what a token service outage
# looks like), Google's "Username and Password not accepted" and Microsoft's "Authentication
# unsuccessful" (both 535), and an error challenge saying 401 / invalid_token.
_REFUSED_STATUS = {"401", "invalid_token"}


def token_refused(reply: ServerReply, challenge: Mapping[str, str]) -> bool:
    """True when a fresh token may succeed where this one failed."""
    if challenge.get("status") in _REFUSED_STATUS:
        return True
    return reply.code in (535, 454)


def refused(
    base: DeliveryError, mechanism: str, challenge: Mapping[str, str], *, refreshed: bool
) -> DeliveryError:
    """``base`` (the reply's error) with what the token login adds: the mechanism, the
    challenge's status and scope, and whether a fresh token was tried already."""
    detail = ""
    status, scope = challenge.get("status"), challenge.get("scope")
    if status:
        detail = f" (the server's error challenge: status {status}"
        detail += f", scope {scope})" if scope else ")"
    hint = (
        "; a fresh token was fetched and refused too: check the app's permissions (SMTP.Send "
        "for Microsoft, https://mail.google.com/ for Google), that SMTP AUTH is enabled for the "
        "mailbox, and that FLUXMAIL_USERNAME is the mailbox the token is for"
        if refreshed
        else ""
    )
    message = base.message.replace("; check the username and password", "")
    message = message[:1].lower() + message[1:]  # "Login failed at ..." follows the mechanism
    text = f"{MECHANISMS[mechanism]} {message}{detail}{hint}"
    reply: dict[str, Any] = {
        "transient": base.transient,
        "smtp_code": base.smtp_code,
        "smtp_text": base.smtp_text,
        "enhanced_status": base.enhanced_status,
        "stage": "auth",
    }
    if refreshed:
        return type(base)(text, code="oauth_token_refused", **reply)
    return type(base)(text, code=base.code, **reply)


def unsupported(mechanism: str, offered: list[str], where: str) -> AuthenticationFailed:
    """The server does not offer the configured mechanism: say what it offers and what to set."""
    name = MECHANISMS[mechanism]
    shown = " ".join(m.upper() for m in offered) or "none"
    other = next((m for m in MECHANISMS if m != mechanism and m in offered), None)
    if other is not None:
        fix = f"; it offers {MECHANISMS[other]}: set FLUXMAIL_AUTH={other}"
    elif "plain" in offered or "login" in offered:
        fix = "; it offers only password logins: set FLUXMAIL_AUTH=password and FLUXMAIL_PASSWORD"
    else:
        fix = ""
    return AuthenticationFailed(
        f"{where} does not offer the {name} login (FLUXMAIL_AUTH={mechanism}); offered: "
        f"{shown}{fix}",
        code="auth_mechanism_unavailable",
        stage="auth",
    )
