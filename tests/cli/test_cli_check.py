"""``fluxmail check`` in-process against real TLS servers with trustme certificates."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from fluxmail.cli.exit_codes import EXIT_CODES
from tests.support.cli import cli
from tests.support.servers import Faults, SMTPTestServer, reply

Server = Callable[..., SMTPTestServer]


def tls_env(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer, **extra: str) -> None:
    """Configure fluxmail for ``server`` by environment; the CA is NOT trusted unless given."""
    monkeypatch.setenv("FLUXMAIL_HOST", server.host)
    monkeypatch.setenv("FLUXMAIL_PORT", str(server.port))
    monkeypatch.setenv("FLUXMAIL_TIMEOUT", "10")
    if server.tls == "implicit":
        monkeypatch.setenv("FLUXMAIL_SSL", "true")
    if server.tls == "starttls":  # loopback would default to plaintext otherwise
        monkeypatch.setenv("FLUXMAIL_TLS", "true")
    for name, value in extra.items():
        monkeypatch.setenv(f"FLUXMAIL_{name.upper()}", value)


def test_check_reports_tls_ehlo_login(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trusted STARTTLS server: TLS version, certificate, extensions, login and timings."""
    server = smtp_server(tls="starttls", auth=("alice@example.com", "s3cret-pass"))
    tls_env(
        monkeypatch, server, ca_file=server.ca_path,
        username="alice@example.com", password="s3cret-pass",
    )  # fmt: skip
    ran = cli(capsys, monkeypatch, "check")
    assert ran.code == 0, ran.both
    for expected in ("TLSv1.", "certificate:", "fluxmail test CA", "PIPELINING", "SIZE"):
        assert expected in ran.out
    assert "ok as alice@example.com" in ran.out and " ms" in ran.out
    assert "nothing was sent" in ran.out
    assert server.deliveries == 0 and "MAIL" not in server.commands
    data = json.loads(cli(capsys, monkeypatch, "check", "--json").out)
    assert data["ok"] is True and data["authenticated"] is True
    assert data["tls"]["version"].startswith("TLSv1.")
    assert "auth" in data["extensions"] and set(data["timings_ms"]) >= {"connect", "tls", "auth"}


def test_check_untrusted_until_ca_file(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private CA is reported untrusted (exit 6, FLUXMAIL_CA_FILE hint) until it is set."""
    server = smtp_server(tls="implicit")
    tls_env(monkeypatch, server)
    ran = cli(capsys, monkeypatch, "check")
    assert ran.code == EXIT_CODES["permanent"], ran.both
    assert "[certificate_error]" in ran.err and "FLUXMAIL_CA_FILE" in ran.err
    assert "Traceback" not in ran.err
    as_json = json.loads(cli(capsys, monkeypatch, "check", "--json").out)
    assert as_json["error"]["code"] == "certificate_error"
    assert "FLUXMAIL_CA_FILE" in as_json["explanation"]
    monkeypatch.setenv("FLUXMAIL_CA_FILE", server.ca_path)
    assert cli(capsys, monkeypatch, "check").code == 0


def test_check_bad_credentials_explained(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 535 reply is explained in terms of FLUXMAIL_USERNAME / FLUXMAIL_PASSWORD."""
    server = smtp_server(tls="starttls", auth=("alice@example.com", "right-password"))
    tls_env(
        monkeypatch, server, ca_file=server.ca_path,
        username="alice@example.com", password="wrong-password",
    )  # fmt: skip
    ran = cli(capsys, monkeypatch, "check")
    assert ran.code == EXIT_CODES["permanent"], ran.both
    assert "535" in ran.err and "FLUXMAIL_PASSWORD" in ran.err
    assert "login:" in ran.out and "failed" in ran.out


def test_check_starttls_missing_explained(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that hides STARTTLS fails the check; no plaintext fallback, and it says so."""
    server = smtp_server(tls="starttls", advertise_starttls=False)
    tls_env(monkeypatch, server, ca_file=server.ca_path)
    ran = cli(capsys, monkeypatch, "check")
    assert ran.code == EXIT_CODES["permanent"], ran.both
    assert "[starttls_unavailable]" in ran.err and "plaintext" in ran.err


def test_check_refused_greeting_and_no_server(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 554 greeting exits 6; nothing listening exits 5 (temporary) with a plain hint."""
    server = smtp_server(faults=Faults(greeting=reply("554 5.7.1 Go away")))
    tls_env(monkeypatch, server, tls="false")
    ran = cli(capsys, monkeypatch, "check")
    assert ran.code == EXIT_CODES["permanent"], ran.both
    with socket.socket() as reserved:  # bound, never listening: connection refused
        reserved.bind(("127.0.0.1", 0))
        monkeypatch.setenv("FLUXMAIL_PORT", str(reserved.getsockname()[1]))
        ran = cli(capsys, monkeypatch, "check")
    assert ran.code == EXIT_CODES["temporary"], ran.both
    assert "FLUXMAIL_HOST" in ran.err


def test_check_needs_smtp_backend(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check with FLUXMAIL_TYPE=memory is a configuration error (exit 3) naming the variable."""
    monkeypatch.setenv("FLUXMAIL_TYPE", "memory")
    ran = cli(capsys, monkeypatch, "check")
    assert ran.code == EXIT_CODES["configuration"]
    assert "FLUXMAIL_TYPE" in ran.err
