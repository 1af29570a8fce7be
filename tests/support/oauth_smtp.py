"""XOAUTH2 and OAUTHBEARER (RFC 7628) for the aiosmtpd test server: the tokens are verified.

``SMTPTestServer(..., oauth=TokenVerifier("box@example.com", tokens))`` offers the mechanisms
listed in ``auth_mechanisms`` (``("XOAUTH2",)``, ``("OAUTHBEARER",)``, or both). A login is
accepted only for the mailbox ``user`` with a bearer token that ``tokens`` holds at that moment:
a set the test fills, or a callable returning the tokens a token endpoint issued and that have
not expired. A refused token gets the provider's answer:

- ``style="google"``: a 334 error challenge (base64 JSON ``{"status": "401", ...}`` for
  XOAUTH2, ``{"status": "invalid_token", ...}`` for OAUTHBEARER), then, after the client's
  answer (empty for XOAUTH2, ``%x01`` for OAUTHBEARER, RFC 7628 3.2.3), ``535 5.7.8``;
- ``style="microsoft"``: ``535 5.7.3 Authentication unsuccessful`` at once.

``attempts`` records every login (mechanism, user, token accepted, the client's answer to the
challenge) so tests count logins server-side.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from aiosmtpd.smtp import MISSING, SMTP, AuthResult

__all__ = ["LoginAttempt", "OAuthLogin", "OAuthMechanisms", "TokenVerifier"]

_SCOPE = "https://mail.google.com/"


@dataclass(frozen=True)
class OAuthLogin:
    """``session.auth_data`` after a token login (``login`` as aiosmtpd's LoginPassword has)."""

    login: bytes
    mechanism: str


@dataclass(frozen=True)
class LoginAttempt:
    mechanism: str
    user: str | None
    token: str | None
    accepted: bool
    answer: bytes | None = None  # the client's answer to the error challenge


@dataclass
class TokenVerifier:
    """Which bearer tokens the server accepts for ``user``, and what it saw."""

    user: str
    tokens: Collection[str] | Callable[[], Collection[str]] = field(default_factory=set)
    style: Literal["google", "microsoft"] = "google"
    echo: bool = False  # quote the client's initial response in a refusal (a careless server)
    _attempts: list[LoginAttempt] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def accepts(self, user: str | None, token: str | None) -> bool:
        valid = self.tokens() if callable(self.tokens) else self.tokens
        return user == self.user and token is not None and token in valid

    def record(self, attempt: LoginAttempt) -> None:
        with self._lock:
            self._attempts.append(attempt)

    @property
    def attempts(self) -> list[LoginAttempt]:
        with self._lock:
            return list(self._attempts)

    @property
    def logins(self) -> int:
        return sum(1 for a in self.attempts if a.accepted)


def _parse(mechanism: str, raw: bytes) -> tuple[str | None, str | None]:
    """(user, token) from an initial response, or (None, None) if it is malformed."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, None
    if not text.endswith("\x01\x01"):
        return None, None
    parts = text[:-2].split("\x01")
    if mechanism == "OAUTHBEARER":  # RFC 7628 3.1: gs2-header "n,a=user," then key=value
        head = parts.pop(0)
        if not (head.startswith("n,a=") and head.endswith(",")):
            return None, None
        user = head[4:-1].replace("=2C", ",").replace("=3D", "=")
    else:  # XOAUTH2: user=...^Aauth=Bearer ...^A^A
        first = parts.pop(0) if parts else ""
        if not first.startswith("user="):
            return None, None
        user = first[5:]
    pairs = dict(p.split("=", 1) for p in parts if "=" in p)
    auth = pairs.get("auth", "")
    if not auth.startswith("Bearer "):
        return None, None
    return user, auth[len("Bearer ") :]


async def _bearer(
    server: SMTP, args: list[str], mechanism: str, verifier: TokenVerifier | None
) -> AuthResult:
    if verifier is None:
        return AuthResult(success=False, handled=False, message="504 5.5.4 Not offered")
    if len(args) > 1:
        try:
            raw: Any = base64.b64decode(args[1], validate=True)
        except binascii.Error:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Bad base64")
    else:
        raw = await server.challenge_auth("")
        if raw is MISSING:
            return AuthResult(success=False, handled=True)
    user, token = _parse(mechanism, raw)
    echoed = f" (received {args[1]})" if verifier.echo and len(args) > 1 else ""
    if verifier.accepts(user, token):
        verifier.record(LoginAttempt(mechanism, user, token, True))
        assert user is not None
        return AuthResult(success=True, auth_data=OAuthLogin(user.encode(), mechanism))
    if verifier.style == "microsoft":
        verifier.record(LoginAttempt(mechanism, user, token, False))
        return AuthResult(
            success=False, handled=False, message="535 5.7.3 Authentication unsuccessful" + echoed
        )
    status = "401" if mechanism == "XOAUTH2" else "invalid_token"
    challenge = json.dumps({"status": status, "schemes": "bearer", "scope": _SCOPE})
    answer = await server.challenge_auth(challenge)
    verifier.record(
        LoginAttempt(mechanism, user, token, False, None if answer is MISSING else answer)
    )
    if answer is MISSING:
        return AuthResult(success=False, handled=True)
    return AuthResult(
        success=False,
        handled=False,
        message="535 5.7.8 Username and Password not accepted. For more information, go to "
        "https://support.google.com/mail/?p=BadCredentials" + echoed,
    )


class OAuthMechanisms:
    """aiosmtpd finds ``auth_<NAME>`` methods on the handler; ``oauth`` verifies the tokens."""

    oauth: TokenVerifier | None = None

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await _bearer(server, args, "XOAUTH2", self.oauth)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await _bearer(server, args, "OAUTHBEARER", self.oauth)
