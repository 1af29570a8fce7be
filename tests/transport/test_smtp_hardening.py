"""Issue 11: legacy TLS, a login the server requires, and hints that fit the failure.

Every test talks to a real server on 127.0.0.1: the aiosmtpd servers of
``tests/support/servers.py``, and, where aiosmtpd cannot show a behaviour (asyncio drops the TLS
alert it should send), a small blocking TLS server in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fluxmail.cli._common import explain
from fluxmail.cli.exit_codes import exit_code
from fluxmail.errors import AuthenticationFailed, Refused, TLSFailure
from fluxmail.transport.smtp.replies import timed_out
from fluxmail.transport.smtp.session import SMTPParams, SMTPSession
from tests.support.cli import cli, smtp_env
from tests.support.mailing import Send, mailer_for
from tests.support.servers import Faults, SMTPTestServer, TestCA, reply, stall
from tests.support.servers import _limit_versions as limit_versions

Server = Callable[..., SMTPTestServer]
SEND = ("send", "--to", "bob@example.com", "--subject", "Hi", "--text", "x")

# -- item 2: a server that offers only TLS 1.0/1.1 ------------------------------------------


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_legacy_tls_server_is_a_tls_failure_not_retried(
    smtp_server: Server, send: Send, tls: str
) -> None:
    """TLS 1.0/1.1 only: TLSFailure tls_handshake_failed, not transient, one connection."""
    server = smtp_server(tls=tls, tls_max_version=ssl.TLSVersion.TLSv1_1)
    with pytest.raises(TLSFailure) as info:
        send(mailer_for(server, max_retries=3).create("Hi", "a@example.com", "x"))
    error = info.value
    assert error.code == "tls_handshake_failed" and not error.transient
    assert exit_code(error) == 6 and len(error.attempts) == 1
    assert "TLS >= 1.2" in error.message and "TLS 1.0/1.1" in error.message
    assert error.stage == ("starttls" if tls == "starttls" else "tls")
    assert server.connections == 1 and "MAIL" not in server.commands


@pytest.fixture
def alerting_server(ca: TestCA) -> Iterator[Callable[[bool], int]]:
    """A blocking TLS 1.0/1.1 server that sends its protocol_version alert, as OpenSSL does.

    ``start(starttls)`` returns the port; with STARTTLS it speaks just enough SMTP to get there.
    """
    threads: list[threading.Thread] = []

    def serve(listener: socket.socket, starttls: bool) -> None:
        context = ca.server_context()
        limit_versions(context, ssl.TLSVersion.TLSv1_1)
        conn, _ = listener.accept()
        with conn, listener:
            conn.settimeout(10)
            if starttls:
                conn.sendall(b"220 legacy ESMTP\r\n")
                conn.recv(1024)  # EHLO
                conn.sendall(b"250-legacy\r\n250 STARTTLS\r\n")
                conn.recv(1024)  # STARTTLS
                conn.sendall(b"220 go ahead\r\n")
            with contextlib.suppress(ssl.SSLError):  # the client's versions: refused
                context.wrap_socket(conn, server_side=True).close()

    def start(starttls: bool) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        thread = threading.Thread(target=serve, args=(listener, starttls), daemon=True)
        thread.start()
        threads.append(thread)
        return int(listener.getsockname()[1])

    yield start
    for thread in threads:
        thread.join(10)


@pytest.mark.parametrize("security", ["starttls", "implicit"])
def test_protocol_version_alert_names_what_the_server_offers(
    alerting_server: Callable[[bool], int], ca: TestCA, security: Any
) -> None:
    """With the server's alert, the message says it offers only TLS older than 1.2."""
    port = alerting_server(security == "starttls")
    params = SMTPParams(
        "127.0.0.1", port, security, ca.client_context(), connect_timeout=10, command_timeout=10
    )

    async def go() -> None:
        session = SMTPSession(params)
        try:
            await session.connect()
        finally:
            await session.close()

    with pytest.raises(TLSFailure) as info:
        asyncio.run(go())
    assert info.value.code == "tls_handshake_failed" and not info.value.transient
    assert "offers only TLS versions older than 1.2" in info.value.message
    assert "requires TLS >= 1.2" in info.value.message


# -- item 11: the server requires a login and none is configured -----------------------------


def test_required_login_without_credentials_is_auth_required(
    smtp_server: Server, send: Send
) -> None:
    """530 5.7.0 to MAIL FROM (RFC 4954 section 6): auth_required naming the settings."""
    server = smtp_server(auth=("alice", "pw"), auth_required=True, auth_require_tls=False)
    with pytest.raises(AuthenticationFailed) as info:
        send(mailer_for(server, max_retries=2).create("Hi", "a@example.com", "x"))
    error = info.value
    assert error.code == "auth_required" and not error.transient and error.smtp_code == 530
    assert "FLUXMAIL_USERNAME" in error.message and "FLUXMAIL_PROVIDER" in error.message
    assert len(error.attempts) == 1 and server.deliveries == 0


def test_530_after_login_does_not_ask_for_credentials(smtp_server: Server, send: Send) -> None:
    """Logged in and still 530: auth_required, but no advice to configure credentials."""
    server = smtp_server(
        auth=("alice", "pw"),
        auth_require_tls=False,
        faults=Faults(mail=reply("530 5.7.0 Authentication required")),
    )
    mailer = mailer_for(server, username="alice", password="pw")
    with pytest.raises(AuthenticationFailed) as info:
        send(mailer.create("Hi", "a@example.com", "x"))
    assert info.value.code == "auth_required" and "logged in" in info.value.message
    assert "FLUXMAIL_USERNAME" not in info.value.message


def test_530_starttls_first_stays_sender_refused(smtp_server: Server, send: Send) -> None:
    """'530 Must issue a STARTTLS command first' is about TLS, not a login."""
    server = smtp_server(faults=Faults(mail=reply("530 5.7.0 Must issue a STARTTLS command first")))
    with pytest.raises(Refused) as info:
        send(mailer_for(server).create("Hi", "a@example.com", "x"))
    assert info.value.code == "sender_refused"


def test_cli_send_hints_at_credentials(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fluxmail send: [auth_required], exit 6, and a hint naming the settings."""
    server = smtp_server(auth=("alice", "pw"), auth_required=True, auth_require_tls=False)
    smtp_env(monkeypatch, server.port)
    ran = cli(capsys, monkeypatch, *SEND)
    assert ran.code == 6, ran.both
    assert "[auth_required]" in ran.err and "hint:" in ran.err
    assert "FLUXMAIL_PASSWORD" in ran.err and "FLUXMAIL_PROVIDER" in ran.err


def test_check_reports_auth_offered_without_credentials(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check: the server offers AUTH and nothing is configured, in text and JSON."""
    server = smtp_server(auth=("alice", "pw"), auth_required=True, auth_require_tls=False)
    smtp_env(monkeypatch, server.port)
    ran = cli(capsys, monkeypatch, "check")
    assert ran.code == 0, ran.both
    assert "not configured, but the server offers AUTH" in ran.out
    assert "FLUXMAIL_USERNAME" in ran.out and "not logged in" in ran.out
    data = json.loads(cli(capsys, monkeypatch, "check", "--json").out)
    assert data["auth_offered_without_credentials"] is True
    plain = smtp_server()  # no AUTH offered: nothing to report
    monkeypatch.setenv("FLUXMAIL_PORT", str(plain.port))
    ran = cli(capsys, monkeypatch, "check")
    assert "skipped (no FLUXMAIL_USERNAME)" in ran.out and "not logged in" not in ran.out


# -- item 12: hints that fit the stage, the real source of "no TLS", smtp+plain:// ------------


@pytest.mark.parametrize(
    ("stage", "words"),
    [
        ("connect", "firewall"),
        ("tls", "FLUXMAIL_SSL=true"),
        ("greeting", "implicit TLS (465)"),
        ("ehlo", "slow or overloaded"),
        ("auth", "slow or overloaded"),
        ("mail", "slow or overloaded"),
        ("data", "slow or overloaded"),
    ],
)
def test_timeout_hint_fits_the_stage(stage: str, words: str) -> None:
    """Only a timeout at connect points at a firewall; later ones at a slow server."""
    hint = explain(timed_out(stage, "127.0.0.1:25", 10, after_dot=False))
    assert hint is not None and words in hint
    assert ("firewall" in hint) == (stage == "connect")


@pytest.mark.parametrize(("fault", "words"), [("greeting", "FLUXMAIL_SSL"), ("mail", "TIMEOUT")])
def test_cli_timeout_after_connect_is_not_a_firewall(
    smtp_server: Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    words: str,
) -> None:
    """A stall after connecting (no greeting; MAIL after login): no firewall hint."""
    server = smtp_server(
        auth=("alice", "pw"), auth_require_tls=False, faults=Faults(**{fault: stall()})
    )
    smtp_env(monkeypatch, server.port, timeout="0.5", username="alice", password="pw")
    ran = cli(capsys, monkeypatch, *SEND)
    assert ran.code == 5, ran.both
    assert "[timeout]" in ran.err and words in ran.err and "firewall" not in ran.err


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        ({"FLUXMAIL_TLS": "false"}, "none (plaintext; FLUXMAIL_TLS=false)"),
        ({}, "none (plaintext; default for the loopback host 127.0.0.1; nothing set)"),
        ({"FLUXMAIL_URL": "smtp+plain://127.0.0.1:{port}"}, "FLUXMAIL_URL smtp+plain://"),
    ],
)
def test_check_names_the_real_source_of_plaintext(
    smtp_server: Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    shown: str,
) -> None:
    """The tls row says which setting (or default) chose plaintext, never a made-up one."""
    server = smtp_server()
    if "FLUXMAIL_URL" not in env:
        monkeypatch.setenv("FLUXMAIL_HOST", server.host)
        monkeypatch.setenv("FLUXMAIL_PORT", str(server.port))
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(port=server.port))
    ran = cli(capsys, monkeypatch, "check")
    assert ran.code == 0, ran.both
    assert shown in ran.out


def test_smtp_url_to_a_plaintext_dev_server_names_smtp_plus_plain(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """smtp:// means STARTTLS; against a server without it the fix shown is smtp+plain://."""
    server = smtp_server()
    monkeypatch.setenv("FLUXMAIL_URL", f"smtp://127.0.0.1:{server.port}")
    monkeypatch.setenv("FLUXMAIL_SENDER", "demo@example.com")
    for command in (("check",), SEND):
        ran = cli(capsys, monkeypatch, *command)
        assert ran.code == 6, ran.both
        assert "[starttls_unavailable]" in ran.err
        assert "smtp+plain://" in ran.err and "FLUXMAIL_TLS=false" in ran.err
    assert "MAIL" not in server.commands
