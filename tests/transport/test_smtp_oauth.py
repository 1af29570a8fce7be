"""SMTP logins with OAuth 2.0 bearer tokens (XOAUTH2, OAUTHBEARER) against a real aiosmtpd
server that verifies every token: mechanism choice, one refresh on refusal, re-login before a
token expires, and no token anywhere it could leak."""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxmail import AuthenticationFailed, FluxMail
from fluxmail.transport.oauth.tokens import CallableTokenSource
from fluxmail.transport.smtp import sasl
from fluxmail.transport.smtp.session import SMTPSession
from tests.support.mailing import mailer_for
from tests.support.oauth_smtp import TokenVerifier
from tests.support.servers import Faults, reply

USER = "box@example.com"


class Issuer:
    """A token provider that issues short random tokens, each valid until it expires, and
    counts how often it was asked (what a token endpoint would count)."""

    def __init__(self, lifetime: float = 3600.0, *, refuse_first: int = 0) -> None:
        self.lifetime = lifetime
        self.refuse_first = refuse_first  # the first N tokens are never valid (revoked)
        self._serial = itertools.count(1)
        self._valid: dict[str, float] = {}
        self.issued: list[str] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        return len(self.issued)

    def __call__(self) -> tuple[str, float]:
        n = next(self._serial)
        token = f"ya29.T{n}x{base64.urlsafe_b64encode(bytes([n]) * 12).decode()}"
        expires = time.time() + self.lifetime
        with self._lock:
            self.issued.append(token)
            if n > self.refuse_first:
                self._valid[token] = expires
        return token, expires

    def valid(self) -> set[str]:
        now = time.time()
        with self._lock:
            return {t for t, exp in self._valid.items() if exp > now}


def _server(smtp_server: Any, issuer: Issuer, mechanisms: tuple[str, ...], **kw: Any) -> Any:
    style = kw.pop("style", "google")
    verifier = TokenVerifier(USER, issuer.valid, style=style, echo=kw.pop("echo", False))
    server = smtp_server(tls=kw.pop("tls", "starttls"), auth_mechanisms=mechanisms, oauth=verifier)
    server.verifier = verifier
    return server


def _mailer(server: Any, issuer: Issuer, **options: Any) -> FluxMail:
    return mailer_for(server, username=USER, token_provider=issuer, **options)


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_token_login_sends(smtp_server: Any, send: Any, mechanism: str, tls: str) -> None:
    """XOAUTH2 and OAUTHBEARER log in with a verified token and deliver, sync and async."""
    issuer = Issuer()
    server = _server(smtp_server, issuer, (mechanism.upper(),), tls=tls)
    mailer = _mailer(server, issuer, auth=mechanism)
    result = send(mailer.create("Hi", "a@example.com", "x"))
    assert result.status == "sent"
    [message] = server.messages
    assert message.login == USER and message.tls
    [attempt] = server.verifier.attempts
    assert attempt.accepted and attempt.mechanism == mechanism.upper()
    assert attempt.token == issuer.issued[0] and issuer.calls == 1


def test_auto_picks_xoauth2_when_a_token_provider_is_given(smtp_server: Any) -> None:
    """FLUXMAIL_AUTH=auto (the default) logs in with XOAUTH2 once token_provider= is given,
    even when the server also offers PLAIN; describe() says so and never shows the callable."""
    issuer = Issuer()
    server = _server(smtp_server, issuer, ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"))
    mailer = _mailer(server, issuer)
    shown = mailer.config.describe()
    assert shown["auth"]["value"] == "xoauth2"
    assert shown["token_provider"] == {
        "value": "<callable given as argument>",
        "source": "argument",
    }
    assert mailer.create("Hi", "a@example.com", "x").send().status == "sent"
    assert [a.mechanism for a in server.verifier.attempts] == ["XOAUTH2"]


@pytest.mark.parametrize(
    ("mechanism", "offered", "hint"),
    [
        ("xoauth2", ("PLAIN", "LOGIN"), "FLUXMAIL_AUTH=password"),
        ("oauthbearer", ("XOAUTH2",), "FLUXMAIL_AUTH=xoauth2"),
    ],
)
def test_server_without_the_mechanism(
    smtp_server: Any, send: Any, mechanism: str, offered: tuple[str, ...], hint: str
) -> None:
    """A server that does not offer the mechanism: auth_mechanism_unavailable, naming what it
    offers and what to set; no token is fetched and no AUTH is sent."""
    issuer = Issuer()
    server = _server(smtp_server, issuer, offered)
    mailer = _mailer(server, issuer, auth=mechanism)
    with pytest.raises(AuthenticationFailed) as caught:
        send(mailer.create("Hi", "a@example.com", "x"))
    assert caught.value.code == "auth_mechanism_unavailable"
    assert mechanism.upper() in caught.value.message and hint in caught.value.message
    assert "AUTH" not in server.commands and issuer.calls == 0


@pytest.mark.parametrize("style", ["google", "microsoft"])
@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_refused_token_is_refreshed_once(
    smtp_server: Any, send: Any, mechanism: str, style: str
) -> None:
    """A token the server refuses (revoked before it expired): exactly one new token and one
    new login, on the same connection; the error challenge is answered as the mechanism says."""
    issuer = Issuer(refuse_first=1)
    server = _server(smtp_server, issuer, (mechanism.upper(),), style=style)
    mailer = _mailer(server, issuer, auth=mechanism, max_retries=3)
    result = send(mailer.create("Hi", "a@example.com", "x"))
    assert result.status == "sent" and len(result.attempts) == 1
    refused, accepted = server.verifier.attempts
    assert (refused.accepted, accepted.accepted) == (False, True)
    assert (refused.token, accepted.token) == tuple(issuer.issued)
    if style == "google":  # RFC 7628 3.2.3: %x01 for OAUTHBEARER; XOAUTH2 answers empty
        assert refused.answer == (b"\x01" if mechanism == "oauthbearer" else b"")
    assert issuer.calls == 2 and server.commands.count("AUTH") == 2
    assert server.connections == 1 and server.deliveries == 1


@pytest.mark.parametrize("style", ["google", "microsoft"])
def test_token_refused_twice_fails_without_a_loop(smtp_server: Any, send: Any, style: str) -> None:
    """Every token refused: one refresh, two logins in all, then AuthenticationFailed
    (oauth_token_refused), even with retries allowed: a 535 is permanent."""
    issuer = Issuer(refuse_first=10**6)
    server = _server(smtp_server, issuer, ("XOAUTH2",), style=style)
    mailer = _mailer(server, issuer, max_retries=3)
    with pytest.raises(AuthenticationFailed) as caught:
        send(mailer.create("Hi", "a@example.com", "x"))
    exc = caught.value
    assert exc.code == "oauth_token_refused" and exc.smtp_code == 535 and not exc.transient
    assert "XOAUTH2" in exc.message and "fresh token" in exc.message
    assert issuer.calls == 2 and len(server.verifier.attempts) == 2
    assert server.deliveries == 0


def test_kept_open_connection_logs_in_again_before_the_token_expires(smtp_server: Any) -> None:
    """`with mailer:` keeps one login while its token is fresh; once the token is due for
    renewal the next send opens a new session with a new token (Google ends sessions with it)."""
    issuer = Issuer(lifetime=1.0)  # renewed halfway: 0.5 s
    server = _server(smtp_server, issuer, ("XOAUTH2",))
    mailer = _mailer(server, issuer)
    with mailer:
        mailer.create("one", "a@example.com", "x").send()
        mailer.create("two", "a@example.com", "x").send()
        assert server.connections == 1 and issuer.calls == 1
        time.sleep(0.6)
        mailer.create("three", "a@example.com", "x").send()
    assert server.connections == 2 and issuer.calls == 2
    assert [a.token for a in server.verifier.attempts] == issuer.issued
    assert server.deliveries == 3


def test_long_lived_token_keeps_one_session(smtp_server: Any) -> None:
    """A token far from expiry: `with mailer:` reuses one session and one token."""
    issuer = Issuer(lifetime=3600)
    server = _server(smtp_server, issuer, ("OAUTHBEARER",))
    mailer = _mailer(server, issuer, auth="oauthbearer")
    with mailer:
        for i in range(3):
            mailer.create(f"m{i}", "a@example.com", "x").send()
    assert server.connections == 1 and issuer.calls == 1 and server.deliveries == 3


def _messages(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"subject": f"n{i}", "recipients": [f"u{i}@example.com"], "body": f"body {i}"}


def test_bulk_run_that_outlives_its_token_logs_in_again(smtp_server: Any) -> None:
    """send_many() slower than the token's life: its connection logs in again with a new token
    and every message is delivered exactly once, each login verified by the server."""
    issuer = Issuer(lifetime=0.8)
    server = _server(smtp_server, issuer, ("XOAUTH2",))
    mailer = _mailer(server, issuer)
    run = mailer.send_many(_messages(12), concurrency=1, rate_limit=10, progress=False)
    outcomes = list(run)
    assert all(o.status == "sent" for o in outcomes) and len(outcomes) == 12
    assert server.deliveries == 12
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
        f"u{i}@example.com" for i in range(12)
    )
    assert issuer.calls >= 2 and server.verifier.logins >= 2
    assert all(a.accepted for a in server.verifier.attempts)


def test_concurrent_sends_share_one_token(smtp_server: Any) -> None:
    """Eight sends at once over the pool: one token fetch (single flight), eight logins."""
    issuer = Issuer()
    server = _server(smtp_server, issuer, ("XOAUTH2",))
    mailer = _mailer(server, issuer)

    async def main() -> list[str]:
        drafts = [mailer.create(f"m{i}", "a@example.com", "x") for i in range(8)]
        return [r.status for r in await asyncio.gather(*(d.send_async() for d in drafts))]

    assert asyncio.run(main()) == ["sent"] * 8
    assert issuer.calls == 1 and server.deliveries == 8


def test_session_reports_token_expiry(smtp_server: Any) -> None:
    """The low-level session: a token login times the token fetch and knows its expiry."""
    issuer = Issuer(lifetime=120)
    server = _server(smtp_server, issuer, ("XOAUTH2",))
    params = server.params(username=USER, auth="xoauth2", token_source=CallableTokenSource(issuer))

    async def main() -> tuple[float | None, bool, dict[str, float]]:
        session = SMTPSession(params)
        await session.connect()
        try:
            return session.token_expires_at, session.login_stale, dict(session.timings)
        finally:
            await session.close()

    expires, stale, timings = asyncio.run(main())
    assert expires is not None and 100 < expires - time.time() <= 120 and not stale
    assert "token" in timings and "auth" in timings
    assert "token_source" not in repr(params) and issuer.issued[0] not in repr(params)


# -- the initial responses, byte for byte ----------------------------------------------------


def test_initial_responses() -> None:
    """XOAUTH2 and RFC 7628 OAUTHBEARER initial responses, raw and base64; bad tokens refused."""
    raw, b64 = sasl.initial_response("xoauth2", "a@b.example", "tok")
    assert raw == b"user=a@b.example\x01auth=Bearer tok\x01\x01"
    assert base64.b64decode(b64) == raw
    raw, _ = sasl.initial_response("oauthbearer", "a,b=c@x.example", "tok")
    assert raw == b"n,a=a=2Cb=3Dc@x.example,\x01auth=Bearer tok\x01\x01"
    for bad in ("two words", "tab\there", "ctl\x01a", ""):
        with pytest.raises(AuthenticationFailed) as caught:
            sasl.initial_response("xoauth2", "a@b.example", bad)
        assert caught.value.code == "token_provider_invalid"
        assert not bad or bad not in caught.value.message


def test_error_challenge_parsing() -> None:
    """The 334 challenge's base64 JSON is read; anything else is an empty mapping."""
    text = base64.b64encode(b'{"status":"401","schemes":"bearer","scope":"s"}').decode()
    assert dict(sasl.error_challenge(text)) == {"status": "401", "schemes": "bearer", "scope": "s"}
    assert dict(sasl.error_challenge("not base64!")) == {}
    assert dict(sasl.error_challenge(base64.b64encode(b"[1]").decode())) == {}


# -- secrets ---------------------------------------------------------------------------------


def _forms(token: str, user: str = USER) -> list[str]:
    """Every form of the secret: the token, and both initial responses raw and in base64."""
    found = [token]
    for mechanism in sasl.MECHANISMS:
        raw, b64 = sasl.initial_response(mechanism, user, token)
        found += [raw.decode(), b64.decode()]
    return found


def test_token_never_in_errors_logs_or_audit(
    smtp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that echoes the initial response in its refusal: the token and its base64
    forms appear in no exception text, log record or audit file."""
    caplog.set_level(logging.DEBUG)
    issuer = Issuer(refuse_first=10**6)
    server = _server(smtp_server, issuer, ("XOAUTH2",), echo=True)
    mailer = _mailer(server, issuer, audit_dir=str(tmp_path / "audit"))
    with pytest.raises(AuthenticationFailed) as caught:
        mailer.create("Hi", "a@example.com", "x").send()
    exc = caught.value
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]  # not the server's
    assert ours  # the failed send was logged
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in ours)
    texts = [str(exc), repr(exc), str(exc.to_dict()), logged, repr(mailer.config)]
    texts += [str(a) for a in exc.attempts]
    audit = b"".join(p.read_bytes() for p in (tmp_path / "audit").rglob("*") if p.is_file())
    assert "********" in (exc.smtp_text or "")  # the echo was there, and was redacted
    for token in issuer.issued:
        for form in _forms(token):
            assert all(form not in text for text in texts), form
            assert form.encode() not in audit


def test_454_at_auth_refreshes_once(smtp_server: Any) -> None:
    """454 4.7.0 to AUTH (a token service hiccup) also gets one fresh token and one new login."""
    issuer = Issuer()
    verifier = TokenVerifier(USER, issuer.valid)
    server = smtp_server(
        tls="starttls",
        auth_mechanisms=("XOAUTH2",),
        oauth=verifier,
        faults=Faults(auth=reply("454 4.7.0 Temporary authentication failure", times=1)),
    )
    mailer = _mailer(server, issuer)
    assert mailer.create("Hi", "a@example.com", "x").send().status == "sent"
    assert issuer.calls == 2 and server.commands.count("AUTH") == 2 and verifier.logins == 1
