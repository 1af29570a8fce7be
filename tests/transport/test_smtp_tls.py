"""TLS and login against real servers with trustme certificates: no plaintext fallback, ever."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from fluxmail.errors import AuthenticationFailed, DeliveryError, TLSFailure
from fluxmail.transport.smtp.session import SMTPParams, SMTPSession
from tests.support.servers import Faults, SMTPTestServer, reply

Server = Callable[..., SMTPTestServer]
PASSWORD = "pw-Zq8#unique"
MESSAGE = b"Subject: tls\r\n\r\nhello\r\n"


async def connect_and_send(params: SMTPParams) -> SMTPSession:
    session = SMTPSession(params)
    try:
        await session.connect()
        await session.send("a@example.com", ["b@example.com"], MESSAGE)
    finally:
        await session.close()
    return session


def fail(params: SMTPParams) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        asyncio.run(connect_and_send(params))
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value)
    return info.value


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_tls_and_login(smtp_server: Server, tls: str, mechanism: str) -> None:
    """STARTTLS and implicit TLS verify the certificate, then AUTH PLAIN or LOGIN succeeds."""
    server = smtp_server(tls=tls, auth=("user", PASSWORD), auth_mechanisms=(mechanism,))
    session = SMTPSession(server.params(username="user", password=PASSWORD))

    async def go() -> None:
        await session.connect()
        assert session.authenticated
        info = session.tls_info
        assert info is not None and info.version is not None and info.version.startswith("TLS")
        assert info.cipher and info.not_after is not None
        assert info.peer_issuer is not None and "fluxmail test CA" in info.peer_issuer
        assert {"tls", "auth"} <= set(session.timings) or tls == "implicit"
        await session.send("a@example.com", ["b@example.com"], MESSAGE)
        await session.close()

    asyncio.run(go())
    [msg] = server.messages
    assert msg.tls and msg.login == "user"
    if tls == "starttls":
        assert server.commands[:4] == ["EHLO", "STARTTLS", "EHLO", "AUTH"]


@pytest.mark.parametrize("advertise", [False, True])
def test_starttls_not_offered_fails_before_auth(smtp_server: Server, advertise: bool) -> None:
    """A server that does not offer STARTTLS (or hides it) never sees AUTH or MAIL."""
    if advertise:  # a plaintext-only server offering AUTH without TLS
        server = smtp_server(tls="none", auth=("user", PASSWORD), auth_require_tls=False)
    else:  # STARTTLS stripped from EHLO, as an active attacker would
        server = smtp_server(tls="starttls", advertise_starttls=False, auth=("user", PASSWORD))
    params = server.params(security="starttls", username="user", password=PASSWORD)
    error = fail(params)
    assert isinstance(error, TLSFailure)
    assert error.code == "starttls_unavailable" and not error.transient
    assert error.stage == "starttls"
    assert "AUTH" not in server.commands and "MAIL" not in server.commands


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
@pytest.mark.parametrize(
    ("cert", "words"),
    [("expired", "expired"), ("wrong_host", "127.0.0.1"), ("untrusted", "issuer")],
)
def test_bad_certificates_are_refused(smtp_server: Server, tls: str, cert: str, words: str) -> None:
    """Expired, wrong-host and unknown-CA certificates fail with certificate_error, no AUTH."""
    server = smtp_server(tls=tls, cert=cert, auth=("user", PASSWORD))
    error = fail(server.params(username="user", password=PASSWORD))
    assert isinstance(error, TLSFailure)
    assert error.code == "certificate_error" and not error.transient
    assert words in error.message and "BEGIN CERTIFICATE" not in error.message
    assert "AUTH" not in server.commands and server.deliveries == 0


def test_default_context_does_not_trust_the_test_ca(smtp_server: Server) -> None:
    """Without a context, certifi's bundle is used: a private CA is not trusted."""
    server = smtp_server(tls="implicit")
    error = fail(server.params(ssl_context=None))
    assert error.code == "certificate_error"


def test_starttls_454_is_transient(smtp_server: Server) -> None:
    """STARTTLS answered 454 is a transient TLSFailure, and AUTH is never sent."""
    faults = Faults(starttls=reply("454 4.7.0 TLS not available due to temporary reason"))
    server = smtp_server(tls="starttls", auth=("user", PASSWORD), faults=faults)
    error = fail(server.params(username="user", password=PASSWORD))
    assert isinstance(error, TLSFailure)
    assert error.code == "starttls_failed" and error.transient and error.smtp_code == 454
    assert "AUTH" not in server.commands


@pytest.mark.parametrize(
    ("fault", "code", "transient"),
    [
        ("535 5.7.8 Authentication credentials invalid", "auth_failed", False),
        ("454 4.7.0 Temporary authentication failure", "auth_deferred", True),
        ("421 4.7.0 Try again later, closing", "auth_deferred", True),
        ("530 5.7.0 Must issue a STARTTLS command first", "auth_requires_tls", False),
        ("538 5.7.11 Encryption required for requested mechanism", "auth_requires_tls", False),
        ("534 5.7.9 Authentication mechanism is too weak", "auth_mechanism_too_weak", False),
    ],
)
def test_auth_replies(smtp_server: Server, fault: str, code: str, transient: bool) -> None:
    """Each AUTH failure maps to its code and transient flag, after exactly one AUTH."""
    server = smtp_server(tls="starttls", auth=("user", PASSWORD), faults=Faults(auth=reply(fault)))
    error = fail(server.params(username="user", password=PASSWORD))
    assert isinstance(error, AuthenticationFailed)
    assert (error.code, error.transient) == (code, transient)
    assert error.smtp_code == int(fault[:3]) and error.enhanced_status == fault.split()[1]
    assert server.commands.count("AUTH") == 1  # never a second mechanism or a retry
    assert "MAIL" not in server.commands


def test_wrong_password_535_once(smtp_server: Server) -> None:
    """Real 535 from the server for a wrong password: one AUTH, auth_failed, not transient."""
    server = smtp_server(tls="starttls", auth=("user", "other-password"))
    error = fail(server.params(username="user", password=PASSWORD))
    assert (error.code, error.transient, error.smtp_code) == ("auth_failed", False, 535)
    assert server.commands.count("AUTH") == 1


def test_echoed_credentials_are_redacted(smtp_server: Server) -> None:
    """A server echoing the base64 credentials in its reply does not leak them into errors."""
    import base64

    blob = base64.b64encode(b"\0user\0" + PASSWORD.encode()).decode()
    faults = Faults(auth=reply(f"535 5.7.8 Bad credentials {blob}"))
    server = smtp_server(tls="starttls", auth=("user", PASSWORD), faults=faults)
    error = fail(server.params(username="user", password=PASSWORD))
    assert blob not in str(error) and blob not in (error.smtp_text or "")
    assert blob not in str(error.to_dict())


@pytest.mark.parametrize("word", ["pass", "1", "attempt"])
def test_common_word_password_is_redacted_as_a_word(smtp_server: Server, word: str) -> None:
    """A common-word password echoed in a 535 is redacted as a whole word, nothing else."""
    faults = Faults(auth=reply(f"535 5.7.8 password {word} is wrong, 1 attempt left"))
    server = smtp_server(tls="starttls", auth=("user", word), faults=faults)
    error = fail(server.params(username="user", password=word))
    text = error.smtp_text or ""
    assert "password" in text and "wrong" in text  # the words around it are intact
    assert word not in text.split() and "********" in text
    assert "********word" not in str(error.to_dict())


def test_no_usable_mechanism(smtp_server: Server) -> None:
    """A server offering no AUTH at all fails with auth_unsupported before any AUTH."""
    server = smtp_server(tls="starttls")
    error = fail(server.params(username="user", password=PASSWORD))
    assert isinstance(error, AuthenticationFailed) and error.code == "auth_unsupported"
    assert "AUTH" not in server.commands


def test_insecure_auth_refused_before_connecting(smtp_server: Server) -> None:
    """Credentials without TLS to a non-loopback host fail before any connection."""
    server = smtp_server()
    params: dict[str, Any] = {"security": "none", "username": "user", "password": PASSWORD}
    error = fail(server.params(host="smtp.example.invalid", **params))
    assert isinstance(error, AuthenticationFailed) and error.code == "insecure_auth"
    assert not error.transient and server.connections == 0


def test_plaintext_auth_to_loopback_is_allowed(smtp_server: Server) -> None:
    """On loopback (a local relay or dev server) AUTH without TLS is allowed."""
    server = smtp_server(auth=("user", PASSWORD), auth_require_tls=False)
    asyncio.run(connect_and_send(server.params(username="user", password=PASSWORD)))
    assert server.messages[0].login == "user"
